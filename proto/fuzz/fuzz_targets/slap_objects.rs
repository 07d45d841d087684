//! The typed slap objects: decoding never panics, and an accepted object re-encodes to a
//! document that decodes to the same encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slapos_proto::slap::SlapObject;
use slapos_proto::Limits;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let Ok(object) = SlapObject::decode(data, &limits) else {
        return;
    };
    let xml = object.encode().expect("a decoded object always encodes");
    let again = SlapObject::decode(xml.as_bytes(), &limits).expect("our own output decodes");
    assert_eq!(again.class(), object.class());
    assert_eq!(
        again.encode().expect("encodes"),
        xml,
        "encoding is not canonical"
    );
});
