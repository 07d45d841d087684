//! The pages, as maud templates: every `(value)` is HTML-escaped by maud, and no value
//! a person or a node supplied is ever wrapped in `PreEscaped` (only the constants of
//! this crate are).

use maud::{html, Markup, DOCTYPE};

use crate::schema::{Field, Kind};
use crate::{
    GroupStatus, Installed, MemberStatus, Offer, Principal, Reported, Server, Service, ServiceRow,
    BASE,
};

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
                            a href={ (BASE) "/servers" } { "Servers" }
                            a href={ (BASE) "/account" } { "Account" }
                            @if who.admin { a href={ (BASE) "/group" } { "Group" } }
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

/// The states a person can filter their services by, in the order the filter lists them.
pub const STATES: [&str; 6] = [
    "running",
    "starting",
    "stopping",
    "stopped",
    "destroying",
    "error",
];

/// Rows on a page of the services list (about 15 KB of HTML at most: a person with
/// 1,000 services gets pages far under 100 KB).
pub const PER_PAGE: usize = 50;

/// One page of a person's services list.
pub struct ServicesPage<'a> {
    /// This page's services.
    pub rows: Vec<&'a ServiceRow>,
    /// How many services the person has, and how many the filter keeps.
    pub total: usize,
    pub matching: usize,
    /// 1-based; `pages` is at least 1.
    pub page: usize,
    pub pages: usize,
    /// The state filter (one of [`STATES`]), if any.
    pub state: Option<&'static str>,
    /// How many services are in each of [`STATES`].
    pub counts: [usize; STATES.len()],
}

/// Page `page` of `len` rows ([`PER_PAGE`] a page), clamped to the pages there are:
/// (the page, 1-based; how many pages, at least 1; how many rows come before it).
pub fn page_bounds(len: usize, page: usize) -> (usize, usize, usize) {
    let pages = len.div_ceil(PER_PAGE).max(1);
    let page = page.clamp(1, pages);
    (page, pages, (page - 1) * PER_PAGE)
}

/// Previous and next links around "first–last of n · page p of m".
fn pager(
    page: usize,
    pages: usize,
    shown: usize,
    of: usize,
    href: impl Fn(usize) -> String,
) -> Markup {
    let first = (page - 1) * PER_PAGE + 1;
    let last = first + shown.saturating_sub(1);
    html! {
        nav.pages aria-label="Pages" {
            @if page > 1 {
                a #previous-page rel="prev" href=(href(page - 1)) { "← Previous" }
            }
            span #page-of { (first) "–" (last) " of " (of) " · page " (page) " of " (pages) }
            @if page < pages {
                a #next-page rel="next" href=(href(page + 1)) { "Next →" }
            }
        }
    }
}

impl<'a> ServicesPage<'a> {
    /// Page `page` (1-based, clamped to the pages there are) of the services of `list`
    /// in `state` (all when None), in the order of `list`.
    pub fn of(list: &'a [ServiceRow], page: usize, state: Option<&'static str>) -> Self {
        let mut counts = [0; STATES.len()];
        let mut matching = Vec::new();
        for s in list {
            let (label, _) = state_of(&s.requested_state, s.reported.as_ref());
            if let Some(i) = STATES.iter().position(|x| *x == label) {
                counts[i] += 1;
            }
            if state.is_none_or(|f| f == label) {
                matching.push(s);
            }
        }
        let (page, pages, skip) = page_bounds(matching.len(), page);
        let rows = matching.iter().skip(skip).take(PER_PAGE).copied().collect();
        ServicesPage {
            rows,
            total: list.len(),
            matching: matching.len(),
            page,
            pages,
            state,
            counts,
        }
    }
}

/// The address of a page of the list (values from [`STATES`] and numbers only; maud
/// escapes the attribute anyway).
fn services_href(page: usize, state: Option<&str>) -> String {
    match state {
        Some(s) => format!("{BASE}/services?state={s}&page={page}"),
        None => format!("{BASE}/services?page={page}"),
    }
}

pub fn services(frame: &Frame, p: &ServicesPage, notice: Option<&str>) -> Markup {
    layout(
        frame,
        "Services",
        html! {
            h1 { "Services" }
            @if let Some(n) = notice { p.notice role="status" { (n) } }
            @if p.total == 0 {
                div.card {
                    p { "No service yet." }
                    a.button href={ (BASE) "/request" } { "Request a service" }
                }
            } @else {
                form.filter method="get" action={ (BASE) "/services" } {
                    label for="state-filter" { "Show" }
                    select #state-filter name="state" {
                        option value="" selected[p.state.is_none()] { "all (" (p.total) ")" }
                        @for (s, n) in STATES.iter().zip(p.counts) {
                            option value=(s) selected[p.state == Some(*s)] { (s) " (" (n) ")" }
                        }
                    }
                    button.secondary.small type="submit" { "Filter" }
                }
                div.card {
                    @if p.rows.is_empty() {
                        p { "No service is " (p.state.unwrap_or("")) "." }
                    } @else {
                        table {
                            thead { tr { th { "Title" } th { "State" } th.hide-narrow { "Release" } } }
                            tbody {
                                @for s in &p.rows {
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
                @if p.matching > 0 {
                    (pager(p.page, p.pages, p.rows.len(), p.matching, |n| services_href(n, p.state)))
                }
            }
        },
    )
}

/// One page of the computers a person provides.
pub struct ServersPage<'a> {
    pub rows: &'a [Server],
    /// Every computer of theirs, and their partitions: all and used.
    pub total: usize,
    pub partitions: usize,
    pub used: usize,
    pub page: usize,
    pub pages: usize,
    /// Unix seconds, for "last contact … ago".
    pub now: u64,
}

impl<'a> ServersPage<'a> {
    /// Page `page` (1-based, clamped) of `list`, in its order.
    pub fn of(list: &'a [Server], page: usize, now: u64) -> Self {
        let (page, pages, skip) = page_bounds(list.len(), page);
        let end = (skip + PER_PAGE).min(list.len());
        ServersPage {
            rows: list.get(skip..end).unwrap_or_default(),
            total: list.len(),
            partitions: list.iter().map(|s| s.partitions).sum(),
            used: list.iter().map(|s| s.used).sum(),
            page,
            pages,
            now,
        }
    }
}

/// "just now", "5 min ago", "3 h ago", "2 days ago" (a clock behind the node's: "just
/// now").
pub fn ago(now: u64, then: u64) -> String {
    let d = now.saturating_sub(then);
    match d {
        0..60 => "just now".to_owned(),
        60..3600 => format!("{} min ago", d / 60),
        3600..86400 => format!("{} h ago", d / 3600),
        _ => format!("{} days ago", d / 86400),
    }
}

fn release_state(r: &Installed) -> (String, &'static str) {
    match (r.requested.as_str(), r.reported.as_deref()) {
        (_, Some(e)) if e.starts_with("error") => (e.to_owned(), "state-error"),
        ("destroyed", Some("destroyed")) => ("removed".to_owned(), "state-stopped"),
        ("destroyed", _) => ("removing".to_owned(), "state-stopping"),
        (_, Some("available")) => ("installed".to_owned(), "state-running"),
        (_, Some("building")) => ("building".to_owned(), "state-starting"),
        _ => ("to install".to_owned(), "state-starting"),
    }
}

pub fn servers(frame: &Frame, p: &ServersPage) -> Markup {
    layout(
        frame,
        "Servers",
        html! {
            h1 { "Servers" }
            @if p.total == 0 {
                div.card { p { "You provide no computer." } }
            } @else {
                p #servers-summary {
                    (p.total) @if p.total == 1 { " computer · " } @else { " computers · " } (p.used) " of " (p.partitions) " partitions used, "
                    (p.partitions - p.used.min(p.partitions)) " free"
                }
                div.card {
                    table #servers {
                        thead { tr {
                            th { "Computer" } th { "Region" } th { "Partitions" }
                            th.hide-narrow { "Releases" } th { "Contact" }
                        } }
                        tbody {
                            @for s in p.rows {
                                tr {
                                    td { span.title { (s.title) } br; code { (s.id) } }
                                    td { (s.region.as_deref().unwrap_or("")) }
                                    td { (s.used) " used, " (s.partitions - s.used.min(s.partitions)) " free" }
                                    td.hide-narrow {
                                        @for r in &s.releases {
                                            @let (label, class) = release_state(r);
                                            div { code { (r.url) } " " span class={ "state " (class) } { (label) } }
                                        }
                                    }
                                    td { @match s.last_contact { Some(t) => (ago(p.now, t)), None => "never" } }
                                }
                            }
                        }
                    }
                }
                (pager(p.page, p.pages, p.rows.len(), p.total, |n| format!("{BASE}/servers?page={n}")))
            }
        },
    )
}

/// A byte count as "1.2 MiB".
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn or_dash(v: Option<u64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| v.to_string())
}

fn member_state(m: &MemberStatus) -> (&str, &'static str) {
    match (m.state.as_deref(), &m.error) {
        (_, Some(_)) | (None, _) => ("no answer", "state-error"),
        (Some(s @ "leader"), _) => (s, "state-running"),
        (Some(s @ ("follower" | "learner")), _) => (s, "state-running"),
        (Some(s), _) => (s, "state-starting"),
    }
}

/// The master group as an operator sees it: what `slapos cluster status` prints.
pub fn group(frame: &Frame, g: &GroupStatus) -> Markup {
    layout(
        frame,
        "Master group",
        html! {
            h1 { "Master group" }
            div.card {
                dl #group-summary {
                    dt { "Group" } dd { code { @if g.group.is_empty() { "(none)" } @else { (g.group) } } }
                    dt { "Leader" } dd { @match g.leader { Some(l) => { "replica " (l) }, None => "none" } }
                    dt { "Term" } dd { (g.term) }
                    dt { "Members" } dd { (g.members.len()) }
                    dt { "Timers" }
                    dd {
                        @match g.timers {
                            Some(t) => {
                                "heartbeat " (t.heartbeat_ms) " ms, election timeout "
                                (t.election_timeout_min_ms) "–" (t.election_timeout_max_ms) " ms"
                            },
                            None => "no leader answered",
                        }
                    }
                }
            }
            @if !g.warnings.is_empty() {
                div #group-warnings {
                    @for w in &g.warnings { p.error role="alert" { (w) } }
                }
            }
            div.card.scroll {
                table #members {
                    thead { tr {
                        th { "Replica" } th { "State" } th.hide-narrow { "Term" } th { "Applied" } th { "Lag" }
                        th { "Round trip" } th.hide-narrow { "Seen" } th.hide-narrow { "Addresses" }
                        th.hide-narrow { "Storage" }
                    } }
                    tbody {
                        @for m in &g.members {
                            @let (state, class) = member_state(m);
                            tr {
                                td {
                                    strong { (m.id) } " " (m.role)
                                    @if g.leader == Some(m.id) { " · leader" }
                                    @if !m.region.is_empty() { br; "region " (m.region) }
                                    @if let Some(h) = &m.hosted_by { br; "in " code { (h) } }
                                }
                                td {
                                    span class={ "state " (class) } { (state) }
                                    @if let Some(e) = &m.error { br; span.hint { (e) } }
                                }
                                td.hide-narrow { (or_dash(m.term)) }
                                td {
                                    (or_dash(m.applied_index))
                                    span.hint { br; "committed " (or_dash(m.committed_index)) ", last " (or_dash(m.last_log_index)) }
                                }
                                td { (m.lag) }
                                td { @match m.rtt_ms { Some(r) => { (format!("{r:.1}")) " ms" }, None => "–" } }
                                td.hide-narrow { @match m.last_answer_ms { Some(a) => { (a) " ms ago" }, None => "–" } }
                                td.hide-narrow {
                                    "API " code { (m.api_addr) } br; "Raft " code { (m.raft_addr) }
                                    @if let Some(u) = &m.gateway_url { br; "gateway " code { (u) } }
                                }
                                td.hide-narrow {
                                    @if let Some(l) = m.log_size_bytes { "log " (bytes(l)) }
                                    @if let Some(sn) = m.snapshot_size_bytes {
                                        br; "snapshot " (bytes(sn)) " at " (or_dash(m.snapshot_index))
                                    }
                                    @if let Some(pu) = m.purged_index { br; "purged to " (pu) }
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
        let rows: Vec<ServiceRow> = list.iter().map(ServiceRow::from).collect();
        let server = Server {
            id: HOSTILE.into(),
            title: HOSTILE.into(),
            region: Some(HOSTILE.into()),
            partitions: 3,
            used: 1,
            releases: vec![Installed {
                url: HOSTILE.into(),
                requested: "available".into(),
                reported: Some(format!("error: {HOSTILE}")),
            }],
            last_contact: Some(0),
        };
        let servers_list = [server];
        let admin = Principal {
            admin: true,
            ..who.clone()
        };
        let admin_frame = Frame {
            who: Some(&admin),
            csrf: "t",
        };
        let group_html = group(&admin_frame, &hostile_group()).into_string();
        for html in [
            group_html.clone(),
            servers(&frame, &ServersPage::of(&servers_list, 1, 7200)).into_string(),
            services(&frame, &ServicesPage::of(&rows, 1, None), Some(HOSTILE)).into_string(),
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

    /// A group whose every text came from somewhere else (a member's addresses and
    /// region are what an operator typed, an error what a transport said).
    fn hostile_group() -> GroupStatus {
        let member = |id: u64, state: Option<&str>, error: Option<&str>| MemberStatus {
            id,
            role: HOSTILE.into(),
            state: state.map(str::to_owned),
            raft_addr: HOSTILE.into(),
            api_addr: HOSTILE.into(),
            region: HOSTILE.into(),
            hosted_by: Some(HOSTILE.into()),
            gateway_url: Some(HOSTILE.into()),
            term: Some(7),
            last_log_index: Some(120),
            committed_index: Some(119),
            applied_index: Some(118),
            lag: 3,
            snapshot_index: Some(100),
            purged_index: Some(90),
            log_size_bytes: Some(3 * 1024 * 1024 / 2),
            snapshot_size_bytes: Some(2048),
            rtt_ms: (id != 1).then_some(230.0),
            last_answer_ms: (id != 1).then_some(5_000),
            error: error.map(str::to_owned),
        };
        let members = vec![
            member(1, Some("leader"), None),
            member(2, Some(HOSTILE), None),
            member(3, None, Some(HOSTILE)),
        ];
        let timers = crate::TimerStatus {
            heartbeat_ms: 100,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
        };
        let mut warnings = master_client::status::timer_warnings(timers, &members);
        warnings.push(HOSTILE.into());
        GroupStatus {
            group: HOSTILE.into(),
            leader: Some(1),
            term: 7,
            members,
            timers: Some(timers),
            warnings,
        }
    }

    #[test]
    fn the_group_page_shows_what_cluster_status_shows() {
        let who = Principal {
            person: "root".into(),
            admin: true,
            via: SignedInBy::Certificate,
        };
        let frame = Frame {
            who: Some(&who),
            csrf: "t",
        };
        let html = group(&frame, &hostile_group()).into_string();
        for said in [
            "replica 1",
            "heartbeat 100 ms, election timeout 300–600 ms",
            "230.0 ms",
            "5000 ms ago",
            "no answer",
            "log 1.5 MiB",
            "snapshot 2.0 KiB at 100",
            "purged to 90",
            "at least 2300 ms",
            "replica 2 last answered the leader 5000 ms ago",
        ] {
            assert!(html.contains(said), "{said} not in {html}");
        }
        // the link shows for an admin only
        assert!(html.contains("/portal/group"));
        let person = Principal {
            admin: false,
            ..who.clone()
        };
        let html = services(
            &Frame {
                who: Some(&person),
                csrf: "t",
            },
            &ServicesPage::of(&[], 1, None),
            None,
        )
        .into_string();
        assert!(!html.contains("/portal/group"), "{html}");
    }

    /// Rendering alone (no master read) of a page of a person's list of 1,000 services
    /// and of one service's page: the weight is asserted (the 100 KB), the time
    /// printed (the p99 target is for the whole server time: `slapos bench portal`).
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
        let rows: Vec<ServiceRow> = list.iter().map(ServiceRow::from).collect();
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..20 {
            let t = std::time::Instant::now();
            bytes = services(&frame, &ServicesPage::of(&rows, 7, None), None)
                .into_string()
                .len();
            times.push(t.elapsed());
        }
        times.sort();
        assert!(bytes < 100_000, "a page of the list weighs {bytes} bytes");
        let t = std::time::Instant::now();
        let one = super::service(&frame, &list[0], None).into_string().len();
        assert!(one < 100_000, "a service's page weighs {one} bytes");
        eprintln!(
            "a page of the services list of 1,000: median {:?}, max {:?} of 20, {bytes} bytes; one service's page {:?}, {one} bytes",
            times[10],
            times[19],
            t.elapsed()
        );
    }

    /// A provider's 1,000 computers: pages of 50 under 100 KB, the totals of all.
    #[test]
    fn a_page_of_a_thousand_servers() {
        let list: Vec<Server> = (0..1000)
            .map(|i| Server {
                id: format!("COMP-{i:06}"),
                title: format!("rack {} machine {}", i / 40, i % 40),
                region: Some(format!("region-{}", i % 5)),
                partitions: 10,
                used: i % 11,
                releases: vec![Installed {
                    url: "https://example.com/software/a-release-url/software.cfg".into(),
                    requested: "available".into(),
                    reported: Some("available".into()),
                }],
                last_contact: Some(1_000_000 - i as u64 * 60),
            })
            .collect();
        let who = Principal {
            person: "prov".into(),
            admin: false,
            via: SignedInBy::Certificate,
        };
        let frame = Frame {
            who: Some(&who),
            csrf: "t",
        };
        let p = ServersPage::of(&list, 20, 1_000_000);
        assert_eq!((p.page, p.pages, p.rows.len(), p.total), (20, 20, 50, 1000));
        assert_eq!(p.partitions, 10_000);
        assert_eq!(p.rows[0].id, "COMP-000950");
        let html = servers(&frame, &p).into_string();
        assert!(html.len() < 100_000, "{} bytes", html.len());
        assert!(html.contains("951–1000 of 1000 · page 20 of 20"), "{html}");
        assert!(html.contains("15 h ago"), "{html}");
        assert_eq!(ago(100, 200), "just now");
    }

    /// The pages cover the list once, in its order; the filter keeps its state only and
    /// counts every state; a page out of range is the nearest one; the links keep the
    /// filter.
    #[test]
    fn pages_of_the_services_list() {
        let mut list: Vec<Service> = (0..120).map(service).collect();
        for s in list.iter_mut().skip(100) {
            s.reported = Some(Reported {
                kind: "started".into(),
                message: String::new(),
                at: 0,
            });
        }
        let list: Vec<ServiceRow> = list.iter().map(ServiceRow::from).collect();
        let mut seen = Vec::new();
        for n in 1..=3 {
            let p = ServicesPage::of(&list, n, None);
            assert_eq!((p.page, p.pages, p.total, p.matching), (n, 3, 120, 120));
            seen.extend(p.rows.iter().map(|s| s.id.clone()));
        }
        let all: Vec<String> = list.iter().map(|s| s.id.clone()).collect();
        assert_eq!(seen, all);
        assert_eq!(ServicesPage::of(&list, 0, None).page, 1);
        assert_eq!(ServicesPage::of(&list, 99, None).page, 3);
        let running = ServicesPage::of(&list, 1, Some("running"));
        assert_eq!((running.matching, running.pages), (20, 1));
        assert!(running
            .rows
            .iter()
            .all(|s| s.reported.as_ref().is_some_and(|r| r.kind == "started")));
        assert_eq!(running.counts, [20, 0, 0, 0, 0, 100]);
        let none = ServicesPage::of(&list, 1, Some("stopped"));
        assert_eq!((none.matching, none.pages, none.rows.len()), (0, 1, 0));

        let who = Principal {
            person: "alice".into(),
            admin: false,
            via: SignedInBy::Certificate,
        };
        let frame = Frame {
            who: Some(&who),
            csrf: "t",
        };
        let html = services(&frame, &ServicesPage::of(&list, 2, Some("error")), None).into_string();
        assert!(
            html.contains("href=\"/portal/services?state=error&amp;page=1\""),
            "{html}"
        );
        assert!(!html.contains("rel=\"next\""), "{html}");
        assert!(html.contains("51–100 of 100 · page 2 of 2"), "{html}");
        let first = services(&frame, &ServicesPage::of(&list, 1, None), None).into_string();
        assert!(
            first.contains("href=\"/portal/services?page=2\""),
            "{first}"
        );
        assert!(!first.contains("rel=\"prev\""), "{first}");
    }
}
