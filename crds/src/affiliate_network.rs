//! AffiliateNetwork: a network that reports conversions to `/postback/{key}`, how it authenticates and
//! which template reads its postbacks.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{ObjectRef, SecretKeyRef};
use crate::status::ResourceStatus;
use crate::validation::{Errors, FieldError, Link, Validate, ValidationContext, is_key, item, join};

/// Default HMAC timestamp window, seconds.
pub const DEFAULT_HMAC_WINDOW_SECONDS: i64 = 300;

/// An affiliate network: it sends conversions to `/postback/{key}`.
// clippy reads the repeated `type_ = …` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "traffoflex.io",
    version = "v1alpha1",
    kind = "AffiliateNetwork",
    namespaced,
    status = "ResourceStatus",
    derive = "PartialEq",
    category = "traffoflex",
    doc = "A TraffoFlex affiliate network: it reports conversions to /postback/{key}.",
    printcolumn(name = "Key", type_ = "string", json_path = ".spec.key"),
    printcolumn(name = "Auth", type_ = "string", json_path = ".spec.auth.mode"),
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct AffiliateNetworkSpec {
    /// The key in `/postback/{key}`: lowercase letters, digits and dashes, 1–63 characters.
    pub key: String,
    /// Display name.
    pub name: String,
    /// The template that reads this network's postbacks, by ID (API, store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postback_template_id: Option<String>,
    /// The template, by name (Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postback_template_ref: Option<ObjectRef>,
    /// How postbacks prove they come from the network.
    #[serde(default)]
    pub auth: NetworkAuth,
    /// When not empty, postbacks are accepted only from these addresses (CIDRs or single IPs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_allowlist: Vec<String>,
    /// The preset this network was set up from (e.g. `generic`), for the link builder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// What happens when the click can't be looked up at once (default `failOpen`).
    #[serde(default)]
    pub click_lookup: ClickLookupMode,
    /// The team owning the network, which its postback logs and unattributed conversions carry. The store
    /// owns it (the API sets the caller's team, the operator its configured team); not part of the CRD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub team_id: Option<String>,
}

/// Postback authentication.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NetworkAuth {
    /// `none`, `token` (a shared parameter) or `hmac` (header `X-Signature: t=<unix>,v1=<hex>`).
    #[serde(default)]
    pub mode: AuthMode,
    /// The shared token (`mode: token`). In Kubernetes prefer `secretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The HMAC-SHA256 key (`mode: hmac`). In Kubernetes prefer `secretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Kubernetes only: the Secret key holding the token or HMAC key; the operator copies its value into
    /// `token` or `secret` of the mirrored store object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// The parameter carrying the token (default: `token`; `secret` and `key` are accepted too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_param: Option<String>,
    /// How far a signature's timestamp may be from now, in seconds (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub window_seconds: Option<i64>,
}

/// How a network authenticates.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "camelCase")]
pub enum AuthMode {
    /// Anyone who knows the URL (pair it with `ipAllowlist`).
    #[default]
    None,
    /// A shared token parameter.
    Token,
    /// An HMAC-SHA256 signature header over the raw query or body with a timestamp.
    Hmac,
}

/// What to do with a conversion whose click can't be found at once.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "camelCase")]
pub enum ClickLookupMode {
    /// Accept it and attribute it later (a late click never loses a conversion).
    #[default]
    FailOpen,
    /// Reject it.
    FailClosed,
}

impl Validate for AffiliateNetworkSpec {
    fn validate(&self, ctx: ValidationContext) -> Vec<FieldError> {
        let mut errs = Errors::new();
        errs.key("key", &self.key);
        errs.required_text("name", &self.name, "name", 200);
        let template = Link {
            id_name: "postbackTemplateId",
            id: self.postback_template_id.as_deref(),
            ref_name: "postbackTemplateRef",
            reference: self.postback_template_ref.as_ref(),
            required: true,
        };
        errs.link(ctx, "", template);
        validate_auth(&mut errs, ctx, "auth", &self.auth);
        for (i, entry) in self.ip_allowlist.iter().enumerate() {
            let ok = entry.parse::<ipnet::IpNet>().is_ok() || entry.parse::<std::net::IpAddr>().is_ok();
            if !ok {
                errs.add(
                    item("ipAllowlist", i),
                    format!("`{entry}` is not a CIDR or IP address, e.g. 203.0.113.0/24 or 2001:db8::1"),
                );
            }
        }
        if let Some(preset) = &self.preset
            && !is_key(preset)
        {
            errs.add("preset", format!("`{preset}` is not a preset name (lowercase letters, digits, dashes)"));
        }
        errs.into_vec()
    }
}

fn validate_auth(errs: &mut Errors, ctx: ValidationContext, path: &str, auth: &NetworkAuth) {
    let kube = ctx == ValidationContext::Kubernetes;
    if let Some(secret_ref) = &auth.secret_ref {
        if !kube && ctx == ValidationContext::Api {
            errs.add(join(path, "secretRef"), "secretRef is only for Kubernetes objects; set `token` or `secret`");
        } else if secret_ref.name.is_empty() || secret_ref.key.is_empty() {
            errs.add(join(path, "secretRef"), "name the Secret and the key in it: {name: …, key: …}");
        }
    }
    let from_secret = kube && auth.secret_ref.is_some();
    let blank = |v: &Option<String>| v.as_deref().is_none_or(|s| s.trim().is_empty());
    match auth.mode {
        AuthMode::None => {}
        AuthMode::Token if blank(&auth.token) && !from_secret => errs.add(
            join(path, "token"),
            if kube { "mode token needs `token` or `secretRef`" } else { "mode token needs `token`" },
        ),
        AuthMode::Hmac if blank(&auth.secret) && !from_secret => errs.add(
            join(path, "secret"),
            if kube { "mode hmac needs `secret` or `secretRef`" } else { "mode hmac needs `secret`" },
        ),
        AuthMode::Token | AuthMode::Hmac => {}
    }
    if let Some(param) = &auth.token_param
        && (param.is_empty() || !param.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    {
        errs.add(join(path, "tokenParam"), format!("`{param}` is not a parameter name"));
    }
    if let Some(window) = auth.window_seconds {
        errs.range(&join(path, "windowSeconds"), window, 1, 86_400, " seconds");
    }
}
