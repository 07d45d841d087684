//! The gateway's decoders: form bodies and query strings (`server::http::decode_form`),
//! the fields of each SLAP endpoint (`slap::forms::parse`), JSON-RPC bodies
//! (`jsonrpc::parse`, then served against an empty state) and registration requests
//! (`server::register::token_and_csr`).

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use slap_gateway::jsonrpc::{self, Name};
use slap_gateway::server::http::decode_form;
use slap_gateway::server::register;
use slap_gateway::slap::forms;
use slap_gateway::{Endpoint, SlapContext};
use slapos_domain::{RequestId, State, Timestamp};

use crate::split;

/// The contexts a call is parsed in: slapproxy's (the `X-SlapPartition` header honoured)
/// or a real master's (ignored), picked by bit 1 of the flags byte.
fn context(flags: u8) -> SlapContext {
    let mut ctx = SlapContext::proxy(Some("slaprunner"))
        .with_software_product_list("demo https://example.com/software/demo/software.cfg");
    ctx.partition_header = flags & 2 == 0;
    ctx
}

/// `decode_form`'s contract, on what it accepted: one pair per non-empty `&` item, never
/// more text than bytes, and percent-encoding the pairs again decodes to the same pairs.
pub fn check_form_pairs(body: &[u8], pairs: &[(String, String)]) {
    let items = body.split(|&b| b == b'&').filter(|i| !i.is_empty()).count();
    assert_eq!(pairs.len(), items, "one pair per non-empty item");
    let decoded: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert!(decoded <= body.len(), "{decoded} bytes from {}", body.len());
    let encoded = pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, NON_ALPHANUMERIC),
                utf8_percent_encode(v, NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&");
    match decode_form(encoded.as_bytes()) {
        Ok(again) => assert_eq!(again, pairs, "re-encoded form decodes differently"),
        Err(e) => panic!("re-encoded form refused: {e}"),
    }
}

/// `gateway_forms`: byte 0 picks the endpoint (`Endpoint::ALL`), byte 1 the flags
/// ([`split`]; the header is `Authorization`), the rest is the form body (or query
/// string). Asserts [`check_form_pairs`], that a refusal is a 400, and Flask's rule
/// that a field given twice counts once with its first value: appending a second value
/// for every field changes nothing.
pub fn forms(data: &[u8]) {
    let Some((selector, flags, authorization, body)) = split(data) else {
        return;
    };
    let Ok(pairs) = decode_form(body) else {
        return;
    };
    check_form_pairs(body, &pairs);
    let endpoint = Endpoint::ALL[usize::from(selector) % Endpoint::ALL.len()];
    let ctx = context(flags);
    let parsed = forms::parse(&ctx, endpoint, &pairs, authorization);
    if let Err(e) = &parsed {
        assert_eq!(e.status(), 400, "{e}");
    }
    let mut doubled = pairs.clone();
    doubled.extend(
        pairs
            .iter()
            .map(|(k, _)| (k.clone(), "<marshal><none/></marshal>".to_string())),
    );
    let again = forms::parse(&ctx, endpoint, &doubled, authorization);
    assert_eq!(again, parsed, "a field given twice did not count once");
}

/// `gateway_jsonrpc`: byte 0 picks the method (`jsonrpc::Name::ALL`), byte 1 the flags
/// (the header is `Authorization`), the rest is the JSON body. Asserts that `parse`
/// accepts JSON only and refuses with a 4xx, and that the call served against an empty
/// state (`serve_local`, what proxy mode runs) answers without a 5xx and with JSON.
pub fn jsonrpc(data: &[u8]) {
    let Some((selector, flags, authorization, body)) = split(data) else {
        return;
    };
    let name = Name::ALL[usize::from(selector) % Name::ALL.len()];
    let ctx = context(flags);
    match jsonrpc::parse(&ctx, name, body, authorization) {
        Ok(_) => assert!(
            serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| v.is_object()),
            "accepted a body that is not a JSON object"
        ),
        Err(e) => assert!((400..500).contains(&e.status), "{e:?}"),
    }
    let mut state = State::default();
    let response = jsonrpc::serve_local(
        &ctx,
        &mut state,
        name.name(),
        "POST",
        Some("application/json"),
        body,
        authorization,
        RequestId {
            client: "fuzz".into(),
            seq: 1,
        },
        Timestamp(1_800_000_000_000_000),
    );
    assert!(
        response.status < 500,
        "{} {}",
        response.status,
        String::from_utf8_lossy(&response.body)
    );
    assert!(
        serde_json::from_slice::<serde_json::Value>(&response.body).is_ok(),
        "the answer is not JSON"
    );
}

/// `gateway_register`: the whole input is the form body of `registerComputerWithToken`
/// or `enrollServerWithToken`. Asserts that what `token_and_csr` lets through (before a
/// token is spent) is a non-empty token and a CSR within `MAX_CSR_BYTES` that
/// `slapos_ca::check_csr` accepts, both values of the form, and that a refusal is a 400
/// or a 413.
pub fn register(data: &[u8]) {
    let Ok(pairs) = decode_form(data) else {
        return;
    };
    match register::token_and_csr(&pairs) {
        Ok((token, csr)) => {
            assert!(!token.is_empty());
            assert!(csr.len() <= slapos_ca::MAX_CSR_BYTES);
            assert!(
                slapos_ca::check_csr(csr).is_ok(),
                "an unchecked CSR got through"
            );
            assert!(pairs.iter().any(|(k, v)| k == "token" && v == token));
            assert!(pairs.iter().any(|(k, v)| k == "csr" && v == csr));
        }
        Err(refused) => assert!(matches!(refused.status, 400 | 413), "{}", refused.status),
    }
}
