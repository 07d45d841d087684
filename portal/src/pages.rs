//! The pages, as maud templates: every `(value)` is HTML-escaped by maud, and no value
//! a person or a node supplied is ever wrapped in `PreEscaped` (only the constants of
//! this crate are).

use maud::{html, Markup, DOCTYPE};

use crate::schema::{Field, Kind};
use crate::{Offer, Principal, Reported, Service, BASE};

/// What every page knows: who is signed in and the CSRF token its forms carry.
pub struct Frame<'a> {
    pub who: Option<&'a Principal>,
    pub csrf: &'a str,
}

fn csrf_input(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

pub fn layout(frame: &Frame, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · SlapOS" }
                link rel="stylesheet" href={ (BASE) "/static/portal.css" };
                script src={ (BASE) "/static/portal.js" } defer {}
            }
            body {
                header {
                    a.brand href={ (BASE) "/" } { "SlapOS" }
                    @if let Some(who) = frame.who {
                        nav aria-label="Main" {
                            a href={ (BASE) "/services" } { "Services" }
                            a href={ (BASE) "/request" } { "Request" }
                            a href={ (BASE) "/account" } { "Account" }
                        }
                        span.who { (who.person) @if who.admin { " (admin)" } }
                        @if matches!(who.via, crate::SignedInBy::Session { .. }) {
                            form method="post" action={ (BASE) "/sign-out" } {
                                (csrf_input(frame.csrf))
                                button.secondary.small type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

pub fn sign_in(frame: &Frame, error: Option<&str>, person: &str) -> Markup {
    layout(
        frame,
        "Sign in",
        html! {
            h1 { "Sign in" }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            div.card {
                form method="post" action={ (BASE) "/sign-in" } {
                    (csrf_input(frame.csrf))
                    label for="person" { "Person" }
                    input #person type="text" name="person" autocomplete="username" required value=(person);
                    label for="password" { "Password" }
                    input #password type="password" name="password" autocomplete="current-password" required;
                    div.actions { button type="submit" { "Sign in" } }
                }
                p.hint { "A browser presenting your SlapOS client certificate is signed in without a password." }
            }
        },
    )
}

/// A state for people: what was asked and what the node reported.
pub fn state_of(requested: &str, reported: Option<&Reported>) -> (&'static str, &'static str) {
    let kind = reported.map(|r| r.kind.as_str());
    match (requested, kind) {
        (_, Some("error")) => ("error", "state-error"),
        ("destroyed", _) => ("destroying", "state-destroyed"),
        ("stopped", Some("stopped")) => ("stopped", "state-stopped"),
        ("stopped", _) => ("stopping", "state-stopping"),
        (_, Some("started")) => ("running", "state-running"),
        _ => ("starting", "state-starting"),
    }
}

fn state_badge(requested: &str, reported: Option<&Reported>) -> Markup {
    let (label, class) = state_of(requested, reported);
    html! { span class={ "state " (class) } data-state=(label) { (label) } }
}

pub fn services(frame: &Frame, list: &[Service], notice: Option<&str>) -> Markup {
    layout(
        frame,
        "Services",
        html! {
            h1 { "Services" }
            @if let Some(n) = notice { p.notice role="status" { (n) } }
            @if list.is_empty() {
                div.card {
                    p { "No service yet." }
                    a.button href={ (BASE) "/request" } { "Request a service" }
                }
            } @else {
                div.card {
                    table {
                        thead { tr { th { "Title" } th { "State" } th.hide-narrow { "Release" } } }
                        tbody {
                            @for s in list {
                                tr {
                                    td { a href={ (BASE) "/services/" (s.id) } { (s.title) } }
                                    td { (state_badge(&s.requested_state, s.reported.as_ref())) }
                                    td.hide-narrow { code { (s.software_release) } }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn is_link(v: &str) -> bool {
    (v.starts_with("https://") || v.starts_with("http://"))
        && !v.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn params_table(prefix: &str, map: &std::collections::BTreeMap<String, String>) -> Markup {
    html! {
        table {
            thead { tr { th { "Name" } th { "Value" } th { span.hide-narrow { "Copy" } } } }
            tbody {
                @for (i, (k, v)) in map.iter().enumerate() {
                    @let id = format!("{prefix}-{i}");
                    tr {
                        td { code.key { (k) } }
                        td {
                            @if is_link(v) {
                                a.value id=(id) href=(v) rel="noreferrer noopener" target="_blank" { (v) }
                            } @else {
                                span.value id=(id) { (v) }
                            }
                        }
                        td { button.secondary.small type="button" data-copy=(id) hidden aria-label={ "Copy " (k) } { "Copy" } }
                    }
                }
            }
        }
    }
}

pub fn service(frame: &Frame, s: &Service, notice: Option<&str>) -> Markup {
    layout(
        frame,
        &s.title,
        html! {
            p { a href={ (BASE) "/services" } { "← Services" } }
            h1 #title { (s.title) }
            @if let Some(n) = notice { p.notice role="status" { (n) } }
            (service_live(frame, s))
        },
    )
}

/// The part of a service's page that changes with its state: replaced in place by the
/// page's script from the server-sent events of `<service>/events`.
pub fn service_live(frame: &Frame, s: &Service) -> Markup {
    let base = format!("{BASE}/services/{}", s.id);
    html! {
        div #live data-events={ (base) "/events" } aria-live="polite" {
            div.card {
                dl {
                    dt { "State" } dd #state { (state_badge(&s.requested_state, s.reported.as_ref())) }
                    dt { "Release" } dd { code { (s.software_release) } }
                    dt { "Software type" } dd { code { (s.software_type) } }
                    dt { "Runs on" } dd { (s.placement.as_deref().unwrap_or("not placed yet")) }
                    @if let Some(r) = &s.reported {
                        dt { "Node's report" } dd #report { (r.kind) @if !r.message.is_empty() { ": " (r.message) } }
                    }
                }
                @if s.requested_state != "destroyed" {
                    div.actions {
                        @if s.requested_state == "started" {
                            form method="post" action={ (base) "/state" } {
                                (csrf_input(frame.csrf))
                                input type="hidden" name="state" value="stopped";
                                button.secondary #stop type="submit" { "Stop" }
                            }
                        } @else {
                            form method="post" action={ (base) "/state" } {
                                (csrf_input(frame.csrf))
                                input type="hidden" name="state" value="started";
                                button.secondary #start type="submit" { "Start" }
                            }
                        }
                        a.button #change-parameters href={ (base) "/parameters" } { "Change parameters" }
                        a.button.danger-outline #destroy href={ (base) "/destroy" } { "Destroy…" }
                    }
                }
            }
            h2 { "Connection parameters" }
            div.card #connection {
                @if s.connection.is_empty() { p { "None published yet." } }
                @else { (params_table("conn", &s.connection)) }
            }
            h2 { "Parameters" }
            div.card #parameters {
                @if s.parameters.is_empty() { p { "None." } }
                @else { (params_table("param", &s.parameters)) }
            }
            @if s.members.len() > 1 {
                h2 { "Instances" }
                div.card {
                    table {
                        thead { tr { th { "Title" } th { "State" } th { "Runs on" } } }
                        tbody {
                            @for m in &s.members {
                                tr {
                                    td { (m.title) }
                                    td { (state_badge(&m.requested_state, m.reported.as_ref())) }
                                    td { (m.placement.as_deref().unwrap_or("")) }
                                }
                            }
                        }
                    }
                }
            }
            @let errors: Vec<_> = s.members.iter().filter_map(|m| m.reported.as_ref().filter(|r| r.kind == "error").map(|r| (m, r))).collect();
            @if !errors.is_empty() {
                h2 { "Errors the node reported" }
                div.card #errors {
                    @for (m, r) in errors { p.error { strong { (m.title) } ": " (r.message) } }
                }
            }
        }
    }
}

pub fn confirm_destroy(frame: &Frame, s: &Service) -> Markup {
    layout(
        frame,
        "Destroy",
        html! {
            h1 { "Destroy " (s.title) "?" }
            div.card {
                p { "The service and every instance of its tree are destroyed; their data is lost." }
                form method="post" action={ (BASE) "/services/" (s.id) "/destroy" } {
                    (csrf_input(frame.csrf))
                    div.actions {
                        button.danger #confirm-destroy type="submit" { "Destroy" }
                        a href={ (BASE) "/services/" (s.id) } { "Cancel" }
                    }
                }
            }
        },
    )
}

pub fn catalog(frame: &Frame, offers: &[Offer]) -> Markup {
    layout(
        frame,
        "Request a service",
        html! {
            h1 { "Request a service" }
            @if offers.is_empty() {
                div.card { p { "No release is supplied to a computer you may use." } }
            } @else {
                div.card {
                    table {
                        thead { tr { th { "Release" } th { "Computers" } th {} } }
                        tbody {
                            @for o in offers {
                                tr {
                                    td { code { (o.url) } }
                                    td { (o.computers) }
                                    td {
                                        form method="get" action={ (BASE) "/request" } {
                                            input type="hidden" name="release" value=(o.url);
                                            button.small type="submit" aria-label={ "Request " (o.url) } { "Request" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn field_control(f: &Field, value: Option<&str>) -> Markup {
    let id = format!("f-{}", f.name);
    let name = crate::schema::input_name(&f.name);
    let value = value.or(f.default.as_deref()).unwrap_or("");
    html! {
        label for=(id) { (f.title) @if f.required { " *" } }
        @if let Some(d) = &f.description { p.hint { (d) } }
        @match &f.kind {
            Kind::Bool => {
                input id=(id) type="checkbox" name=(name) value="true" checked[value == "true"];
            }
            Kind::Choice(choices) => {
                select id=(id) name=(name) required[f.required] {
                    @if !f.required { option value="" { "" } }
                    @for c in choices { option value=(c) selected[c == value] { (c) } }
                }
            }
            Kind::Integer => { input id=(id) type="number" step="1" name=(name) value=(value) required[f.required]; }
            Kind::Number => { input id=(id) type="number" step="any" name=(name) value=(value) required[f.required]; }
            Kind::Text => { input id=(id) type="text" name=(name) value=(value) required[f.required]; }
        }
    }
}

/// The parameters part of a request form: generated from the schema, else raw JSON.
pub fn parameter_inputs(
    fields: Option<&[Field]>,
    values: &std::collections::BTreeMap<String, String>,
) -> Markup {
    html! {
        @match fields {
            Some(fields) => {
                input type="hidden" name="form" value="schema";
                @for f in fields { (field_control(f, values.get(&f.name).map(String::as_str))) }
            }
            None => {
                label for="raw" { "Parameters (a JSON object)" }
                p.hint { "This release describes no parameters: give them as JSON, for example {\"name\": \"value\"}." }
                textarea #raw name="raw" {
                    @if !values.is_empty() { (serde_json::to_string_pretty(values).unwrap_or_default()) }
                }
            }
        }
    }
}

pub struct RequestForm<'a> {
    pub release: &'a str,
    pub software_type: &'a str,
    pub title: &'a str,
    pub fields: Option<&'a [Field]>,
    pub values: &'a std::collections::BTreeMap<String, String>,
    pub error: Option<&'a str>,
}

pub fn request_form(frame: &Frame, f: &RequestForm) -> Markup {
    layout(
        frame,
        "Request a service",
        html! {
            h1 { "Request a service" }
            @if let Some(e) = f.error { p.error role="alert" { (e) } }
            div.card {
                form method="post" action={ (BASE) "/request" } {
                    (csrf_input(frame.csrf))
                    input type="hidden" name="release" value=(f.release);
                    p { "Release " code { (f.release) } }
                    label for="title" { "Title *" }
                    input #title type="text" name="title" required maxlength="200" value=(f.title);
                    label for="software_type" { "Software type" }
                    input #software_type type="text" name="software_type" value=(f.software_type);
                    (parameter_inputs(f.fields, f.values))
                    div.actions { button #submit-request type="submit" { "Request" } }
                }
            }
        },
    )
}

pub fn parameters_form(
    frame: &Frame,
    s: &Service,
    fields: Option<&[Field]>,
    values: &std::collections::BTreeMap<String, String>,
    error: Option<&str>,
) -> Markup {
    layout(
        frame,
        "Change parameters",
        html! {
            h1 { "Parameters of " (s.title) }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            div.card {
                form method="post" action={ (BASE) "/services/" (s.id) "/parameters" } {
                    (csrf_input(frame.csrf))
                    (parameter_inputs(fields, values))
                    div.actions {
                        button #save-parameters type="submit" { "Save" }
                        a href={ (BASE) "/services/" (s.id) } { "Cancel" }
                    }
                }
            }
        },
    )
}

pub fn account(
    frame: &Frame,
    who: &Principal,
    notice: Option<&str>,
    error: Option<&str>,
) -> Markup {
    layout(
        frame,
        "Account",
        html! {
            h1 { "Account" }
            @if let Some(n) = notice { p.notice role="status" { (n) } }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            div.card {
                dl {
                    dt { "Person" } dd { (who.person) }
                    dt { "Signed in with" } dd { @match who.via { crate::SignedInBy::Certificate => "a client certificate", crate::SignedInBy::Session { .. } => "a password" } }
                }
            }
            h2 { "Password" }
            div.card {
                form method="post" action={ (BASE) "/account/password" } {
                    (csrf_input(frame.csrf))
                    label for="new" { "New password (at least " (crate::auth::MIN_PASSWORD) " characters)" }
                    input #new type="password" name="password" autocomplete="new-password" required minlength=(crate::auth::MIN_PASSWORD);
                    div.actions { button type="submit" { "Set password" } }
                }
                p.hint { "Setting a password signs out its other sessions." }
            }
        },
    )
}

pub fn problem(frame: &Frame, status: u16, message: &str) -> Markup {
    layout(
        frame,
        "Problem",
        html! {
            h1 { (status) }
            p.error role="alert" { (message) }
            p { a href={ (BASE) "/services" } { "Back to services" } }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Member, SignedInBy};
    use std::collections::BTreeMap;

    const HOSTILE: &str = "<script>alert(1)</script>\"'&";

    fn service(i: usize) -> Service {
        let map = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        Service {
            id: format!("SOFTINST-{i}"),
            title: format!("{HOSTILE}{i}"),
            software_release: format!("https://x/{HOSTILE}"),
            software_type: HOSTILE.into(),
            shared: false,
            requested_state: "started".into(),
            reported: Some(Reported {
                kind: "error".into(),
                message: HOSTILE.into(),
                at: 0,
            }),
            parameters: map(HOSTILE, HOSTILE),
            connection: map("url", "https://example.com/\"><script>alert(1)</script>"),
            sla: BTreeMap::new(),
            placement: Some(HOSTILE.into()),
            computer: None,
            members: vec![Member {
                id: format!("SOFTINST-{i}"),
                title: HOSTILE.into(),
                software_type: HOSTILE.into(),
                requested_state: "started".into(),
                placement: None,
                reported: Some(Reported {
                    kind: "error".into(),
                    message: HOSTILE.into(),
                    at: 0,
                }),
            }],
        }
    }

    #[test]
    fn every_value_from_persons_and_nodes_is_escaped() {
        let who = Principal {
            person: HOSTILE.into(),
            admin: false,
            via: SignedInBy::Session { hash: "h".into() },
        };
        let frame = Frame {
            who: Some(&who),
            csrf: "t",
        };
        let list = [service(1)];
        for html in [
            services(&frame, &list, Some(HOSTILE)).into_string(),
            super::service(&frame, &list[0], Some(HOSTILE)).into_string(),
            confirm_destroy(&frame, &list[0]).into_string(),
            account(&frame, &who, Some(HOSTILE), Some(HOSTILE)).into_string(),
            problem(&frame, 400, HOSTILE).into_string(),
        ] {
            assert!(!html.contains("<script>"), "{html}");
            assert!(html.contains("&lt;script&gt;"), "{html}");
            // the only scripts are the page's own
            assert_eq!(html.matches("<script").count(), 1, "{html}");
        }
    }

    /// Rendering alone (no master read) of a person's list of 1,000 services and of one
    /// service's page: printed, not asserted (the p99 target is for the whole
    /// server time, measured elsewhere).
    #[test]
    fn rendering_a_thousand_services() {
        let who = Principal {
            person: "alice".into(),
            admin: false,
            via: SignedInBy::Certificate,
        };
        let frame = Frame {
            who: Some(&who),
            csrf: "t",
        };
        let list: Vec<Service> = (0..1000).map(service).collect();
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..20 {
            let t = std::time::Instant::now();
            bytes = services(&frame, &list, None).into_string().len();
            times.push(t.elapsed());
        }
        times.sort();
        let t = std::time::Instant::now();
        let one = super::service(&frame, &list[0], None).into_string().len();
        eprintln!(
            "services page of 1,000: median {:?}, max {:?} of 20, {bytes} bytes; one service's page {:?}, {one} bytes",
            times[10],
            times[19],
            t.elapsed()
        );
    }
}
