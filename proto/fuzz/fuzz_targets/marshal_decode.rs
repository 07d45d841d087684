//! `marshal::decode` never panics, and whatever it accepts round-trips: the decoded value
//! encodes, and that encoding decodes to a value that encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slapos_proto::marshal;
use slapos_proto::Limits;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let Ok(value) = marshal::decode(data, &limits) else {
        return;
    };
    let xml = marshal::encode(&value).expect("a decoded value always encodes");
    let again = marshal::decode(xml.as_bytes(), &limits).expect("our own output decodes");
    let xml_again = marshal::encode(&again).expect("encodes");
    assert_eq!(xml, xml_again, "encoding is not canonical");
});
