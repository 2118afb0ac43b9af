//! What went wrong, in words that name the object and say what to do.

use std::fmt;

pub enum CliError {
    /// No kubeconfig and no in-cluster service account.
    NoCluster(kube::Error),
    /// The API server refused or failed a request about `what`.
    Api {
        verb: &'static str,
        what: String,
        error: kube::Error,
    },
    /// The command will not do what was asked; the message says why and what to do.
    Refused(String),
    Other(String),
}

impl CliError {
    pub fn api(error: kube::Error, verb: &'static str, what: &str) -> CliError {
        CliError::Api {
            verb,
            what: what.to_string(),
            error,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::NoCluster(e) => write!(
                f,
                "no Kubernetes cluster to talk to ({e}): set KUBECONFIG, or run inside a pod \
                 with a service account"
            ),
            CliError::Api { verb, what, error } => api_message(f, verb, what, error),
            CliError::Refused(message) | CliError::Other(message) => f.write_str(message),
        }
    }
}

fn api_message(
    f: &mut fmt::Formatter<'_>,
    verb: &str,
    what: &str,
    error: &kube::Error,
) -> fmt::Result {
    let kube::Error::Api(status) = error else {
        return write!(
            f,
            "could not {verb} {what}: {error}; check that the API server is reachable"
        );
    };
    match status.code {
        404 => write!(
            f,
            "{what} not found: check the name and the namespace (-n); `kubectl jwtks status -A` \
             lists the sets you can see"
        ),
        401 => write!(
            f,
            "the API server does not know who you are ({}): renew your credentials",
            status.message
        ),
        403 => write!(
            f,
            "you may not {verb} {what}: {}. Ask your cluster admin for the `{verb}` verb on \
             jwtkeysets.jwt.keyrotator.dev there",
            status.message
        ),
        409 => write!(
            f,
            "{what} was changed by someone else while this command wrote it: run it again"
        ),
        _ => write!(f, "could not {verb} {what}: {}", status.message),
    }
}
