//! MetalLB manifests → ferrolb manifests, and the list of what does not carry over.
//!
//! Pure: text in, objects and findings out; no files, no cluster. The objects are
//! `serde_json::Value`s shaped as ferrolb's `ferrolb.io/v1alpha1` kinds (cluster-scoped), plus
//! Service patches (name, namespace and the `ferrolb.io/` annotations) and, for a BGPPeer with a
//! `password` in clear, the Secret ferrolb reads it from.
//!
//! Every finding has a severity: a [`Severity::Difference`] is something the operator must read
//! (lost, changed in behaviour, or needing an action such as copying a Secret); a
//! [`Severity::Note`] says how something was rewritten without changing behaviour.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use model::address::{Family, parse_block};
use model::bgp::Community;
use model::service::{
    ANNOTATION_ALLOCATED_FROM, ANNOTATION_IPS, ANNOTATION_SHARING, METALLB_EQUIVALENTS,
    METALLB_PREFIXES,
};
use serde_json::{Map, Value, json};

/// The API version every converted ferrolb object gets.
pub const FERROLB_API_VERSION: &str = "ferrolb.io/v1alpha1";
/// The namespace ferrolb reads BGP password Secrets from.
pub const FERROLB_NAMESPACE: &str = "ferrolb-system";

/// How much a finding matters to the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Rewritten, same behaviour.
    Note,
    /// Not carried over, behaves differently, or needs an action by hand.
    Difference,
}

/// One thing the operator should know about the conversion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// `Kind/name` (`Kind/namespace/name` for a Service), or `input` for the whole input.
    pub object: String,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.severity {
            Severity::Note => "note",
            Severity::Difference => "DIFFERENCE",
        };
        write!(f, "{tag}: {}: {}", self.object, self.message)
    }
}

/// The converted objects, in input order, and the findings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conversion {
    pub objects: Vec<Value>,
    pub findings: Vec<Finding>,
}

impl Conversion {
    /// True when some finding is a [`Severity::Difference`] (the command then exits 2).
    pub fn has_differences(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.severity == Severity::Difference)
    }

    /// The objects as one multi-document YAML stream (`---` before each document).
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        for object in &self.objects {
            out.push_str("---\n");
            out.push_str(&serde_saphyr::to_string(object).expect("JSON values serialize"));
            if !out.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }

    /// The objects of one kind.
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects.iter().filter(move |o| o["kind"] == kind)
    }

    /// The object of this kind and name.
    pub fn get<'a>(&'a self, kind: &'a str, name: &str) -> Option<&'a Value> {
        self.of_kind(kind).find(|o| o["metadata"]["name"] == name)
    }
}

/// Why nothing could be converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The input is not YAML.
    Yaml { source: String, message: String },
    /// A document is not a mapping with `kind` and `apiVersion`.
    NotAnObject { source: String, index: usize },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Yaml { source, message } => write!(f, "{source}: invalid YAML: {message}"),
            Error::NotAnObject { source, index } => write!(
                f,
                "{source}: document {} is not a Kubernetes object (a mapping with apiVersion and kind)",
                index + 1
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Parses every input (a name for messages, and its text) and converts the MetalLB objects.
pub fn convert_inputs(inputs: &[(&str, &str)]) -> Result<Conversion, Error> {
    let mut objects = vec![];
    for (source, text) in inputs {
        let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| Error::Yaml {
            source: source.to_string(),
            message: e.to_string(),
        })?;
        for (index, doc) in docs.into_iter().enumerate() {
            match doc {
                Value::Null => continue,
                Value::Object(ref map)
                    if map.get("kind").is_some_and(Value::is_string)
                        && map.get("apiVersion").is_some_and(Value::is_string) =>
                {
                    // A `kind: List` (what `kubectl get -o yaml` prints) holds the objects.
                    if map["kind"] == "List" {
                        for item in map
                            .get("items")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                        {
                            objects.push(item.clone());
                        }
                    } else {
                        objects.push(doc);
                    }
                }
                _ => {
                    return Err(Error::NotAnObject {
                        source: source.to_string(),
                        index,
                    });
                }
            }
        }
    }
    Ok(convert(&objects))
}

/// Converts parsed objects.
pub fn convert(inputs: &[Value]) -> Conversion {
    let mut c = Converter::default();
    // Community aliases and pool families are needed by objects that may come before them.
    for o in inputs {
        if is_metallb(o) && o["kind"] == "Community" {
            for entry in o["spec"]["communities"].as_array().into_iter().flatten() {
                if let (Some(name), Some(value)) = (entry["name"].as_str(), entry["value"].as_str())
                {
                    c.communities.insert(name.to_string(), value.to_string());
                }
            }
        }
        if is_metallb(o) && o["kind"] == "IPAddressPool" {
            for a in o["spec"]["addresses"].as_array().into_iter().flatten() {
                if let Some(a) = a.as_str() {
                    c.pool_families.insert(if a.contains(':') {
                        Family::V6
                    } else {
                        Family::V4
                    });
                }
            }
        }
    }
    for o in inputs {
        c.object(o);
    }
    c.finish()
}

fn is_metallb(o: &Value) -> bool {
    o["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("metallb.io/"))
}

#[derive(Default)]
struct Converter {
    out: Conversion,
    communities: BTreeMap<String, String>,
    pool_families: BTreeSet<Family>,
    peer_families: BTreeSet<Family>,
    namespaces_dropped: BTreeSet<String>,
    skipped: BTreeMap<String, usize>,
}

impl Converter {
    fn note(&mut self, object: &str, message: impl Into<String>) {
        self.push(Severity::Note, object, message.into());
    }

    fn diff(&mut self, object: &str, message: impl Into<String>) {
        self.push(Severity::Difference, object, message.into());
    }

    fn push(&mut self, severity: Severity, object: &str, message: String) {
        self.out.findings.push(Finding {
            severity,
            object: object.to_string(),
            message,
        });
    }

    fn object(&mut self, o: &Value) {
        let kind = o["kind"].as_str().unwrap_or_default().to_string();
        let api = o["apiVersion"].as_str().unwrap_or_default().to_string();
        if kind == "Service" && api == "v1" {
            return self.service(o);
        }
        if !is_metallb(o) {
            *self.skipped.entry(format!("{kind} ({api})")).or_default() += 1;
            return;
        }
        let name = o["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let id = format!("{kind}/{name}");
        if name.is_empty() {
            self.diff(&id, "skipped: the object has no metadata.name");
            return;
        }
        if let Some(ns) = o["metadata"]["namespace"].as_str() {
            self.namespaces_dropped.insert(ns.to_string());
        }
        let empty = Map::new();
        let spec = o["spec"].as_object().unwrap_or(&empty);
        let converted = match kind.as_str() {
            "IPAddressPool" => self.pool(&id, spec),
            "L2Advertisement" => self.l2(&id, spec),
            "BGPAdvertisement" => self.bgp_advertisement(&id, spec),
            "BGPPeer" => {
                let ns = o["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("metallb-system");
                self.peer(&id, &name, ns, spec)
            }
            "BFDProfile" => self.bfd(&id, spec),
            "Community" => {
                self.note(
                    &id,
                    "not converted: ferrolb has no Community objects; its aliases are written inline in the BGPAdvertisements that use them",
                );
                None
            }
            _ => {
                *self.skipped.entry(format!("{kind} ({api})")).or_default() += 1;
                None
            }
        };
        if let Some(spec) = converted {
            self.out.objects.push(json!({
                "apiVersion": FERROLB_API_VERSION,
                "kind": kind,
                "metadata": metadata(o),
                "spec": spec,
            }));
        }
    }

    fn finish(mut self) -> Conversion {
        if !self.namespaces_dropped.is_empty() {
            let list: Vec<_> = self.namespaces_dropped.iter().cloned().collect();
            self.note(
                "input",
                format!(
                    "metadata.namespace dropped ({}): ferrolb's kinds are cluster-scoped",
                    list.join(", ")
                ),
            );
        }
        for (kind, n) in std::mem::take(&mut self.skipped) {
            self.diff(
                "input",
                format!("skipped kind {kind}: {n} object(s) not converted"),
            );
        }
        if !self.peer_families.is_empty() {
            for family in self.pool_families.clone() {
                if !self.peer_families.contains(&family) {
                    self.diff(
                        "input",
                        format!(
                            "pools hold {family} addresses but no BGPPeer has an {family} peerAddress: a ferrolb session carries only its own address family (MetalLB can carry both over one session with MP-BGP or dualStackAddressFamily), so these addresses are not advertised over BGP until a BGPPeer over {family} is added"
                        ),
                    );
                }
            }
        }
        self.out
    }

    /// Reports and drops every field of `spec` not in `known`.
    fn unknown_fields(&mut self, id: &str, spec: &Map<String, Value>, known: &[&str]) {
        for (k, v) in spec {
            if !known.contains(&k.as_str()) && !is_unset(v) {
                self.diff(
                    id,
                    format!("spec.{k} has no ferrolb equivalent and was dropped (was {v})"),
                );
            }
        }
    }

    fn pool(&mut self, id: &str, spec: &Map<String, Value>) -> Option<Value> {
        self.unknown_fields(
            id,
            spec,
            &[
                "addresses",
                "autoAssign",
                "avoidBuggyIPs",
                "serviceAllocation",
            ],
        );
        let mut out = Map::new();
        let mut addresses = vec![];
        for a in spec
            .get("addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(a) = a.as_str() else { continue };
            // MetalLB trims spaces around a range's dash; ferrolb refuses spaces.
            let cleaned: String = a.chars().filter(|c| !c.is_whitespace()).collect();
            if cleaned != a {
                self.note(
                    id,
                    format!("address {a:?} written without spaces: {cleaned:?}"),
                );
            }
            if let Err(e) = parse_block(&cleaned) {
                self.diff(
                    id,
                    format!("address {cleaned:?} is refused by ferrolb's schema and must be fixed by hand: {e}"),
                );
            }
            addresses.push(Value::String(cleaned));
        }
        if addresses.is_empty() {
            self.diff(
                id,
                "skipped: the pool has no addresses (ferrolb needs at least one)",
            );
            return None;
        }
        out.insert("addresses".into(), Value::Array(addresses));
        // Only where they differ from the default (the same in both): MetalLB's CRD writes its
        // defaults into every stored pool, and a pool read from the cluster converts as the
        // same pool read from its file.
        for (field, default) in [("autoAssign", true), ("avoidBuggyIPs", false)] {
            if let Some(v) = spec.get(field).filter(|v| v.as_bool() == Some(!default)) {
                out.insert(field.into(), v.clone());
            }
        }
        if let Some(sa) = spec.get("serviceAllocation").and_then(Value::as_object) {
            let mut alloc = Map::new();
            for (k, v) in sa {
                match k.as_str() {
                    "priority" => match v.as_i64() {
                        Some(0) => self.note(
                            id,
                            "serviceAllocation.priority 0 dropped: MetalLB reads 0 as \"no priority\", ferrolb as the highest (lower numbers first, pools without a priority last); without the field the pool keeps MetalLB's place, after every pool with a priority",
                        ),
                        Some(p) if p > 0 && p <= i64::from(i32::MAX) => {
                            alloc.insert(k.clone(), v.clone());
                            self.note(
                                id,
                                format!("serviceAllocation.priority {p} kept: lower numbers are tried first in both; pools without a priority come last in both; ferrolb breaks ties by pool name"),
                            );
                        }
                        _ => self.diff(
                            id,
                            format!("serviceAllocation.priority {v} dropped: ferrolb takes 0 to 2147483647"),
                        ),
                    },
                    "namespaces" | "namespaceSelectors" | "serviceSelectors" => {
                        if v.as_array().is_some_and(|a| !a.is_empty()) {
                            alloc.insert(k.clone(), v.clone());
                        }
                    }
                    _ if v.is_null() => {}
                    _ => self.diff(
                        id,
                        format!("spec.serviceAllocation.{k} has no ferrolb equivalent and was dropped (was {v})"),
                    ),
                }
            }
            if !alloc.is_empty() {
                out.insert("serviceAllocation".into(), Value::Object(alloc));
            }
        }
        Some(Value::Object(out))
    }

    fn l2(&mut self, id: &str, spec: &Map<String, Value>) -> Option<Value> {
        let fields = [
            "ipAddressPools",
            "ipAddressPoolSelectors",
            "nodeSelectors",
            "interfaces",
        ];
        self.unknown_fields(id, spec, &fields);
        Some(Value::Object(copy_lists(spec, &fields)))
    }

    fn bgp_advertisement(&mut self, id: &str, spec: &Map<String, Value>) -> Option<Value> {
        let lists = [
            "ipAddressPools",
            "ipAddressPoolSelectors",
            "peers",
            "nodeSelectors",
        ];
        let numbers = ["aggregationLength", "aggregationLengthV6", "localPref"];
        let mut known = lists.to_vec();
        known.extend(numbers);
        known.push("communities");
        self.unknown_fields(id, spec, &known);
        let mut out = copy_lists(spec, &lists);
        for k in numbers {
            if let Some(v) = spec.get(k).filter(|v| v.is_number()) {
                out.insert(k.into(), v.clone());
            }
        }
        if spec.get("localPref").is_some_and(Value::is_number) {
            self.note(
                id,
                "localPref is sent to iBGP peers only (as in MetalLB); where advertisements of one prefix differ, ferrolb sends the highest",
            );
        }
        let mut communities: Vec<Value> = vec![];
        for c in spec
            .get("communities")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(c) = c.as_str() else { continue };
            let value = if Community::parse(c).is_ok() {
                c.to_string()
            } else if let Some(value) = self.communities.get(c).cloned() {
                self.note(
                    id,
                    format!("community alias {c:?} replaced by its value {value:?} (from a MetalLB Community object)"),
                );
                value
            } else {
                self.diff(
                    id,
                    format!("community {c:?} dropped: not a community value and no Community object in the input defines it as an alias"),
                );
                continue;
            };
            if Community::parse(&value).is_err() {
                self.diff(
                    id,
                    format!("community {value:?} dropped: ferrolb cannot read it"),
                );
                continue;
            }
            if !communities.iter().any(|v| v == &value) {
                communities.push(Value::String(value));
            }
        }
        if !communities.is_empty() {
            out.insert("communities".into(), Value::Array(communities));
        }
        Some(Value::Object(out))
    }

    fn peer(
        &mut self,
        id: &str,
        name: &str,
        own_ns: &str,
        spec: &Map<String, Value>,
    ) -> Option<Value> {
        let known = [
            "myASN",
            "peerASN",
            "peerAddress",
            "peerPort",
            "sourceAddress",
            "holdTime",
            "keepaliveTime",
            "connectTime",
            "ebgpMultiHop",
            "password",
            "passwordSecret",
            "nodeSelectors",
            "bfdProfile",
            "disableMP",
        ];
        self.unknown_fields(id, spec, &known);
        if spec.get("disableMP").and_then(Value::as_bool) == Some(true) {
            self.note(
                id,
                "disableMP dropped: a ferrolb session always carries only its own address family",
            );
        }
        let mut out = Map::new();
        for k in ["myASN", "peerASN", "peerAddress"] {
            match spec.get(k).filter(|v| !v.is_null()) {
                Some(v) => {
                    out.insert(k.into(), v.clone());
                }
                None => {
                    self.diff(
                        id,
                        format!("skipped: spec.{k} is missing and ferrolb requires it"),
                    );
                    return None;
                }
            }
        }
        if let Some(address) = spec.get("peerAddress").and_then(Value::as_str) {
            self.peer_families.insert(if address.contains(':') {
                Family::V6
            } else {
                Family::V4
            });
        }
        for k in ["peerPort", "sourceAddress"] {
            if let Some(v) = spec.get(k).filter(|v| !v.is_null()) {
                out.insert(k.into(), v.clone());
            }
        }
        for k in ["holdTime", "keepaliveTime", "connectTime"] {
            let Some(v) = spec.get(k).and_then(Value::as_str) else {
                continue;
            };
            match go_duration_ms(v) {
                Some(ms) if ms / 1000 < 65_535 => {
                    let mut secs = ms.div_ceil(1000);
                    if !ms.is_multiple_of(1000) {
                        self.diff(
                            id,
                            format!("spec.{k} {v:?} rounded up to {secs}s: ferrolb takes whole seconds"),
                        );
                    }
                    if k == "holdTime" && (1..3).contains(&secs) {
                        secs = 3;
                        self.diff(
                            id,
                            format!("spec.holdTime {v:?} raised to 3s: ferrolb takes 0s or 3s to 65535s (RFC 4271)"),
                        );
                    }
                    out.insert(k.into(), Value::String(format!("{secs}s")));
                }
                _ => self.diff(
                    id,
                    format!("spec.{k} {v:?} dropped: not a duration ferrolb can take; its default applies"),
                ),
            }
        }
        let ibgp = spec.get("myASN").is_some() && spec.get("myASN") == spec.get("peerASN");
        let multi_hop = spec.get("ebgpMultiHop").and_then(Value::as_bool) == Some(true);
        if multi_hop {
            if ibgp {
                self.note(
                    id,
                    "ebgpMultiHop dropped: the session is iBGP (myASN = peerASN), where ferrolb already sends with TTL 255",
                );
            } else {
                out.insert("ebgpMultiHop".into(), Value::Bool(true));
            }
        }
        if let Some(sel) = spec
            .get("nodeSelectors")
            .filter(|v| v.as_array().is_some_and(|a| !a.is_empty()))
        {
            out.insert("nodeSelectors".into(), sel.clone());
        }
        if let Some(bfd) = spec
            .get("bfdProfile")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            if multi_hop && !ibgp {
                self.diff(
                    id,
                    format!("bfdProfile {bfd:?} dropped: ferrolb runs single-hop BFD only, which an ebgpMultiHop peer cannot use; the session is watched by its hold time alone"),
                );
            } else {
                out.insert("bfdProfile".into(), Value::String(bfd.to_string()));
            }
        }
        let secret = spec.get("passwordSecret").and_then(|s| s["name"].as_str());
        let password = spec
            .get("password")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty());
        if let Some(secret) = secret {
            let ns = spec["passwordSecret"]["namespace"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or(own_ns);
            out.insert("passwordSecret".into(), json!({ "name": secret }));
            self.diff(
                id,
                format!("copy Secret {ns}/{secret} to namespace {FERROLB_NAMESPACE}: ferrolb reads BGP passwords from its own namespace (type kubernetes.io/basic-auth, the password under key \"password\", as MetalLB's)"),
            );
            if password.is_some() {
                self.diff(
                    id,
                    "spec.password dropped: passwordSecret is used (MetalLB refuses both)",
                );
            }
        } else if let Some(password) = password {
            let secret = format!("{name}-bgp-password");
            out.insert("passwordSecret".into(), json!({ "name": secret }));
            self.out.objects.push(json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": { "name": secret, "namespace": FERROLB_NAMESPACE },
                "type": "kubernetes.io/basic-auth",
                "stringData": { "password": password },
            }));
            self.diff(
                id,
                format!("spec.password (in clear) moved into a new Secret {FERROLB_NAMESPACE}/{secret} written to the output, referenced by passwordSecret: ferrolb has no password field; the output now carries the password, store it as you store Secrets"),
            );
        }
        Some(Value::Object(out))
    }

    fn bfd(&mut self, id: &str, spec: &Map<String, Value>) -> Option<Value> {
        let numbers = [
            "receiveInterval",
            "transmitInterval",
            "detectMultiplier",
            "minimumTtl",
        ];
        let mut known = numbers.to_vec();
        known.extend(["passiveMode", "echoMode", "echoInterval"]);
        self.unknown_fields(id, spec, &known);
        let mut out = Map::new();
        for k in numbers {
            if let Some(v) = spec.get(k).filter(|v| v.is_number()) {
                out.insert(k.into(), v.clone());
            }
        }
        if let Some(v) = spec.get("passiveMode").filter(|v| v.is_boolean()) {
            out.insert("passiveMode".into(), v.clone());
        }
        if spec.get("echoMode").and_then(Value::as_bool) == Some(true) {
            self.diff(id, "echoMode dropped: ferrolb's BFD has no echo mode; failure is detected from control packets alone");
        }
        if let Some(v) = spec.get("echoInterval").filter(|v| !v.is_null()) {
            self.note(
                id,
                format!("echoInterval {v} dropped: ferrolb's BFD has no echo mode"),
            );
        }
        if let Some(v) = spec.get("minimumTtl").filter(|v| !v.is_null()) {
            self.note(
                id,
                format!("minimumTtl {v} kept but has no effect: ferrolb's BFD is single-hop and accepts TTL 255 only (RFC 5881)"),
            );
        }
        Some(Value::Object(out))
    }

    fn service(&mut self, o: &Value) {
        let name = o["metadata"]["name"].as_str().unwrap_or_default();
        let namespace = o["metadata"]["namespace"].as_str().unwrap_or("default");
        let id = format!("Service/{namespace}/{name}");
        let mut annotations = Map::new();
        let mut found = false;
        for (key, value) in o["metadata"]["annotations"]
            .as_object()
            .into_iter()
            .flatten()
        {
            let Some(suffix) = METALLB_PREFIXES.iter().find_map(|p| key.strip_prefix(p)) else {
                continue;
            };
            found = true;
            let equivalent = METALLB_EQUIVALENTS
                .iter()
                .find(|(_, metallb)| *metallb == suffix);
            let target = match (equivalent, suffix) {
                (Some((ours, _)), _) => *ours,
                (None, "ip-allocated-from-pool") => {
                    self.note(&id, format!("{key} not carried over: ferrolb's controller writes {ANNOTATION_ALLOCATED_FROM} itself"));
                    continue;
                }
                (None, _) => {
                    self.diff(&id, format!("annotation {key} has no ferrolb equivalent"));
                    continue;
                }
            };
            if let Some(previous) = annotations.get(target).filter(|p| *p != value) {
                self.diff(
                    &id,
                    format!("{key}={value} conflicts with another MetalLB annotation giving {target}={previous}; the first was kept"),
                );
                continue;
            }
            if target == ANNOTATION_SHARING {
                self.note(
                    &id,
                    "allow-shared-ip: Services with one key share an address if their ports do not clash and, for externalTrafficPolicy Local, they select the same pods; a Cluster and a Local Service never share; the address is elected per address, not per Service",
                );
            }
            annotations.insert(target.to_string(), value.clone());
        }
        if let Some(class) = o["spec"]["loadBalancerClass"].as_str()
            && class != model::service::LOAD_BALANCER_CLASS
        {
            self.diff(
                &id,
                format!("spec.loadBalancerClass is {class:?}: ferrolb serves Services without a class or with class {:?}, and the class cannot be changed on an existing Service (recreate it)", model::service::LOAD_BALANCER_CLASS),
            );
        }
        if annotations.contains_key(ANNOTATION_IPS)
            && o["spec"]["loadBalancerIP"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
        {
            self.diff(
                &id,
                "spec.loadBalancerIP and loadBalancerIPs are both set: ferrolb refuses a Service with both (AllocationFailed, InvalidRequest); remove spec.loadBalancerIP",
            );
        }
        if !found {
            return;
        }
        if annotations.is_empty() {
            return;
        }
        self.note(
            &id,
            "patch written with the ferrolb.io/ annotations; the MetalLB ones are left on the Service (ferrolb's controller reads them too) and can be removed afterwards",
        );
        self.out.objects.push(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": { "name": name, "namespace": namespace, "annotations": annotations },
        }));
    }
}

/// Name, labels and annotations (without kubectl's last-applied copy); no namespace, no server
/// fields.
fn metadata(o: &Value) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), o["metadata"]["name"].clone());
    if let Some(labels) = o["metadata"]["labels"]
        .as_object()
        .filter(|l| !l.is_empty())
    {
        m.insert("labels".into(), Value::Object(labels.clone()));
    }
    if let Some(annotations) = o["metadata"]["annotations"].as_object() {
        let kept: Map<_, _> = annotations
            .iter()
            .filter(|(k, _)| *k != "kubectl.kubernetes.io/last-applied-configuration")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !kept.is_empty() {
            m.insert("annotations".into(), Value::Object(kept));
        }
    }
    Value::Object(m)
}

/// `null`, `false`, `0`, `""`, `[]` or `{}`: a field left at Go's zero value, which changes
/// nothing when dropped.
fn is_unset(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// The non-empty list fields of `spec` among `fields`.
fn copy_lists(spec: &Map<String, Value>, fields: &[&str]) -> Map<String, Value> {
    let mut out = Map::new();
    for k in fields {
        if let Some(v) = spec
            .get(*k)
            .filter(|v| v.as_array().is_some_and(|a| !a.is_empty()))
        {
            out.insert(k.to_string(), v.clone());
        }
    }
    out
}

/// A Go `time.Duration` string (`90s`, `1m30s`, `1.5s`, `500ms`) in milliseconds; `None` when
/// negative, malformed or not a whole number of milliseconds.
pub fn go_duration_ms(s: &str) -> Option<u64> {
    if s == "0" {
        return Some(0);
    }
    let mut rest = s;
    let mut total_ns: u128 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut part = int.checked_mul(scale)?;
        let mut div = scale;
        for d in frac.bytes() {
            div /= 10;
            part += u128::from(d - b'0') * div;
        }
        total_ns = total_ns.checked_add(part)?;
        rest = tail;
    }
    if !total_ns.is_multiple_of(1_000_000) {
        return None;
    }
    u64::try_from(total_ns / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration_ms("90s"), Some(90_000));
        assert_eq!(go_duration_ms("1m30s"), Some(90_000));
        assert_eq!(go_duration_ms("1.5s"), Some(1_500));
        assert_eq!(go_duration_ms("500ms"), Some(500));
        assert_eq!(go_duration_ms("1h"), Some(3_600_000));
        assert_eq!(go_duration_ms("0"), Some(0));
        assert_eq!(go_duration_ms("abc"), None);
        assert_eq!(go_duration_ms("10"), None);
        assert_eq!(go_duration_ms(""), None);
    }
}
