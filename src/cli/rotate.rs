//! `rotate NAME`: a new value of the rotate annotation, which the operator honours once:
//! a new key is published now and takes over after publishLead (the safe path).

use jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch};
use serde_json::json;

use super::{CliError, Format, Scope, print_json, set_ref};
use crate::api::{JwtKeySet, ROTATE_ANNOTATION};

pub async fn run(
    client: &Client,
    name: &str,
    scope: &Scope,
    format: Format,
) -> Result<(), CliError> {
    let set = super::get_set(client, scope, name).await?;
    let what = format!("JwtKeySet {}", set_ref(&set));
    // A new value each time: the operator starts one rotation per value it has not seen.
    let value = Timestamp::now().to_string();
    let patch = json!({"metadata": {"annotations": {ROTATE_ANNOTATION: value}}});
    let ns = super::namespace_of(client, scope);
    let sets: Api<JwtKeySet> = Api::namespaced(client.clone(), &ns);
    sets.patch(name, &super::patch_params(), &Patch::Merge(&patch))
        .await
        .map_err(|e| CliError::api(e, "patch", &what))?;
    match format {
        Format::Json => print_json(&json!({
            "namespace": ns, "name": name, "annotation": ROTATE_ANNOTATION, "value": value,
        })),
        Format::Text => {
            println!(
                "Rotation requested for {} ({ROTATE_ANNOTATION}={value}).",
                set_ref(&set)
            );
            println!(
                "A new key is published now and signs after publishLead ({}); the active key then \
                 retires and stays published for propagationDelay + tokenTTL + clockSkew.",
                set.spec.publish_lead
            );
            println!("Follow it with: kubectl jwtks status {name} -n {ns}");
        }
    }
    Ok(())
}
