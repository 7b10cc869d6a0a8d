//! Bundle and statement parsing (everything verify does before and after the signature check)
//! must return an error, never panic, on any bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

use hallmark::signing::bundle::Bundle;
use hallmark::signing::statement::Statement;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = Bundle::parse(data) {
        let _ = Statement::from_payload(&b.payload);
        // Re-encoding what was parsed gives the same parse.
        assert_eq!(Bundle::parse(&b.to_json()).ok().as_ref(), Some(&b));
    }
    let _ = Statement::from_payload(data);
});
