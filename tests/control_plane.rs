//! Proof that the test control plane is a real one and that the CRD works on it as on a
//! user's cluster: the API server accepts the CRD as `kubectl apply` sends it, enforces its
//! schema and every CEL rule at admission, applies its defaults, serves watches, refuses stale
//! writes and collects garbage.

mod support;

use std::time::Duration;

use futures::StreamExt;
use jwt_key_rotator::api::JwtKeySet;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, ObjectMeta, PostParams,
};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

fn dynamic(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<JwtKeySet>(&()))
}

fn object(name: &str, spec: serde_json::Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "jwt.keyrotator.dev/v1alpha1",
        "kind": "JwtKeySet",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .expect("test object")
}

/// Creates a set with this spec and returns the API server's refusal: 422 Invalid.
async fn refused_as_invalid(
    api: &Api<DynamicObject>,
    name: &str,
    spec: &serde_json::Value,
) -> kube::core::Status {
    match api
        .create(&PostParams::default(), &object(name, spec.clone()))
        .await
    {
        Err(kube::Error::Api(status)) if status.code == 422 => *status,
        other => panic!("{spec}: expected 422 Invalid, got {other:?}"),
    }
}

#[tokio::test]
async fn the_api_server_refuses_a_set_that_violates_the_schema_and_names_the_field() {
    let client = support::client().await;
    let ns = support::namespace(&client, "schema").await;
    let api = dynamic(&client, &ns);
    let cases = [
        (json!({"algorithm": "XS999"}), "spec.algorithm"),
        (
            json!({"rotationInterval": "30 days"}),
            "spec.rotationInterval",
        ),
        (json!({"keySize": 1024}), "spec.keySize"),
        (json!({"revokedKids": ["not-a-kid"]}), "spec.revokedKids"),
        (json!({"secretName": "Bad_Name"}), "spec.secretName"),
    ];
    for (i, (spec, field)) in cases.into_iter().enumerate() {
        let status = refused_as_invalid(&api, &format!("bad-{i}"), &spec).await;
        assert!(
            status.message.contains(field),
            "{spec}: message {:?} does not name {field}",
            status.message
        );
    }
    let list = api.list(&ListParams::default()).await.unwrap();
    assert!(list.items.is_empty(), "nothing invalid was stored");
}

#[tokio::test]
async fn a_valid_set_is_defaulted_by_the_server_and_read_back_through_a_watch() {
    let client = support::client().await;
    let ns = support::namespace(&client, "watch").await;
    let api: Api<JwtKeySet> = Api::namespaced(client.clone(), &ns);
    let config = watcher::Config::default().fields("metadata.name=web");
    let mut events = watcher(api.clone(), config).applied_objects().boxed();
    dynamic(&client, &ns)
        .create(
            &PostParams::default(),
            &object("web", json!({"algorithm": "ES256"})),
        )
        .await
        .expect("valid set is accepted");
    let seen = tokio::time::timeout(Duration::from_secs(30), events.next())
        .await
        .expect("watch delivers the new set within 30s")
        .expect("watch stream open")
        .expect("watch event");
    assert_eq!(seen.name_any(), "web");
    assert_eq!(seen.spec.algorithm, jwt_key_rotator::keys::Algorithm::ES256);
    // Structural-schema defaults were applied by the API server, not by our deserializer:
    let raw = dynamic(&client, &ns).get("web").await.unwrap();
    assert_eq!(raw.data["spec"]["rotationInterval"], "720h");
    assert_eq!(raw.data["spec"]["jwks"]["key"], "jwks.json");
    assert!(seen.validate().is_ok());
}

#[tokio::test]
async fn a_write_with_a_stale_resource_version_gets_409_conflict() {
    let client = support::client().await;
    let ns = support::namespace(&client, "conflict").await;
    let api: Api<JwtKeySet> = Api::namespaced(client.clone(), &ns);
    dynamic(&client, &ns)
        .create(&PostParams::default(), &object("web", json!({})))
        .await
        .unwrap();
    let stale = api.get("web").await.unwrap();
    let mut fresh = stale.clone();
    fresh.spec.token_ttl = "2h".into();
    api.replace("web", &PostParams::default(), &fresh)
        .await
        .expect("first write wins");
    let mut late = stale;
    late.spec.token_ttl = "3h".into();
    match api.replace("web", &PostParams::default(), &late).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 409, "{status:?}"),
        other => panic!("a stale write must get 409 Conflict, got {other:?}"),
    }
    assert_eq!(
        api.get("web").await.unwrap().spec.token_ttl,
        "2h",
        "the stale write changed nothing"
    );
}

#[tokio::test]
async fn custom_resources_are_created_updated_and_listed_repeatedly() {
    let client = support::client().await;
    let ns = support::namespace(&client, "many").await;
    let api = dynamic(&client, &ns);
    for round in 0..3 {
        for i in 0..20 {
            let name = format!("set-{round}-{i}");
            api.create(
                &PostParams::default(),
                &object(&name, json!({"algorithm": "EdDSA"})),
            )
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
        }
        let listed = api
            .list(&ListParams::default())
            .await
            .expect("list after creates");
        assert_eq!(listed.items.len(), 20 * (round + 1));
    }
    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    let left = api.list(&ListParams::default()).await.unwrap();
    assert!(left.items.is_empty());
}

#[tokio::test]
async fn garbage_collection_removes_what_a_deleted_set_owned() {
    let client = support::client().await;
    let ns = support::namespace(&client, "gc").await;
    let sets: Api<JwtKeySet> = Api::namespaced(client.clone(), &ns);
    dynamic(&client, &ns)
        .create(&PostParams::default(), &object("owner", json!({})))
        .await
        .unwrap();
    let owner = sets.get("owner").await.unwrap();
    let owner_ref = OwnerReference {
        controller: Some(true),
        ..owner.controller_owner_ref(&()).expect("owner reference")
    };
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let owned = ConfigMap {
        metadata: ObjectMeta {
            name: Some("owned".into()),
            owner_references: Some(vec![owner_ref]),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    maps.create(&PostParams::default(), &owned).await.unwrap();
    sets.delete("owner", &DeleteParams::default())
        .await
        .unwrap();
    support::eventually(
        "the owned ConfigMap to be garbage-collected",
        Duration::from_secs(60),
        || {
            let maps = maps.clone();
            async move {
                maps.get_opt("owned")
                    .await
                    .ok()
                    .flatten()
                    .is_none()
                    .then_some(())
            }
        },
    )
    .await;
}

/// Every CEL rule of the CRD, with a spec that breaks it and the field the API server must
/// name. A rule added to the CRD without a row here fails
/// `every_cel_rule_of_the_crd_has_a_row_and_is_enforced_at_admission`: add its row.
fn cel_rule_rows() -> Vec<(&'static str, serde_json::Value, &'static str)> {
    vec![
        (
            "!has(self.keySize) || self.algorithm.startsWith('RS') || self.algorithm.startsWith('PS')",
            json!({"algorithm": "ES256", "keySize": 2048}),
            "spec.keySize",
        ),
        (
            "duration(self.publishLead) < duration(self.rotationInterval)",
            json!({"rotationInterval": "1h", "publishLead": "1h"}),
            "spec.publishLead",
        ),
        (
            "duration(self.publishLead) >= duration(self.propagationDelay) + duration(self.verifierCacheTTL)",
            json!({"publishLead": "14m", "propagationDelay": "5m", "verifierCacheTTL": "10m"}),
            "spec.publishLead",
        ),
        (
            "duration(self.propagationDelay).getSeconds() + duration(self.tokenTTL).getSeconds() + duration(self.clockSkew).getSeconds() <= 16 * duration(self.rotationInterval).getSeconds()",
            // The example: a valid-looking spec that would hold millions of keys.
            json!({"rotationInterval": "2s", "publishLead": "1s", "propagationDelay": "0s", "verifierCacheTTL": "0s", "tokenTTL": "87599h"}),
            "spec.tokenTTL",
        ),
    ]
}

/// What a rule with a `messageExpression` says for its row's spec in `cel_rule_rows()`.
fn rendered_message(rule: &str) -> &'static str {
    match rule {
        "duration(self.publishLead) >= duration(self.propagationDelay) + duration(self.verifierCacheTTL)" => {
            "publishLead (14m) must be at least propagationDelay + verifierCacheTTL (5m + 10m)"
        }
        _ => "a messageExpression rule without an expected message in rendered_message()",
    }
}

/// A CEL rule as the CRD in crds/ declares it.
struct CelRule {
    rule: String,
    message: String,
}

/// Every `x-kubernetes-validations` rule anywhere in the checked-in CRD's schemas.
fn crd_cel_rules() -> Vec<CelRule> {
    fn walk(schema: &serde_json::Value, rules: &mut Vec<CelRule>) {
        match schema {
            serde_json::Value::Object(map) => {
                for rule in map
                    .get("x-kubernetes-validations")
                    .and_then(|v| v.as_array())
                    .into_iter()
                    .flatten()
                {
                    // A messageExpression renders with the numbers; the row's spec says which.
                    let message = rule["message"].as_str().map(str::to_string);
                    let rule = rule["rule"].as_str().unwrap_or_default().to_string();
                    let message = message.unwrap_or_else(|| rendered_message(&rule).into());
                    rules.push(CelRule { rule, message });
                }
                map.values().for_each(|v| walk(v, rules));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, rules)),
            _ => {}
        }
    }
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/jwtkeysets.jwt.keyrotator.dev.yaml"
    );
    let crd: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(path).expect("crds/ is readable"))
            .expect("crds/ is YAML");
    let mut rules = vec![];
    walk(&crd["spec"]["versions"], &mut rules);
    rules
}

#[tokio::test]
async fn every_cel_rule_of_the_crd_has_a_row_and_is_enforced_at_admission() {
    let rows = cel_rule_rows();
    let rules = crd_cel_rules();
    assert!(!rules.is_empty(), "the CRD has CEL rules");
    for rule in &rules {
        assert!(
            rows.iter().any(|(r, _, _)| *r == rule.rule),
            "CEL rule {:?} of crds/ has no row in cel_rule_rows(): add one that breaks it",
            rule.rule
        );
    }
    let client = support::client().await;
    let ns = support::namespace(&client, "cel").await;
    let api = dynamic(&client, &ns);
    for (i, (rule, spec, field)) in rows.into_iter().enumerate() {
        let declared = rules
            .iter()
            .find(|r| r.rule == rule)
            .unwrap_or_else(|| panic!("row {i}: rule {rule:?} is not in crds/: remove the row"));
        let status = refused_as_invalid(&api, &format!("cel-{i}"), &spec).await;
        let causes = status.details.as_ref().map(|d| d.causes.len());
        assert_eq!(causes, Some(1), "{spec} breaks {rule:?} only: {status:?}");
        assert!(
            status.message.contains(&format!("{field}: Invalid value"))
                && status.message.contains(&declared.message),
            "{spec}: the server's message {:?} does not name {field} with the rule's message {:?}",
            status.message,
            declared.message
        );
    }
    let list = api.list(&ListParams::default()).await.unwrap();
    assert!(list.items.is_empty(), "nothing invalid was stored");
}

#[tokio::test]
async fn kubectl_applies_the_crd_server_side_without_a_warning() {
    // A server-side dry run runs every check of a real apply: the structural schema, CEL
    // compilation and its cost budget; a warning would be printed on stderr. (The client-side
    // `kubectl apply -f crds/` of a user's first install runs on a fresh server in
    // tests/control-plane/smoke-test.sh: here the CRD exists already.)
    support::client().await;
    let apply = ["apply", "--server-side", "-f", "crds/", "--dry-run=server"];
    let out = support::kubectl(&apply);
    assert!(
        out.success,
        "kubectl {}: {}{}",
        apply.join(" "),
        out.stdout,
        out.stderr
    );
    assert!(
        out.stdout
            .contains("jwtkeysets.jwt.keyrotator.dev serverside-applied"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stderr.contains("Warning"),
        "kubectl warned: {}",
        out.stderr
    );
}
