//! A webhook document as another writer of the Redis contract may store it.
//! The two readers, the one that builds a `Webhook` and the one every
//! replica uses to read straight into the packed form, accept and refuse
//! exactly the same documents, with the same reason, and what they accept
//! packs to the same bytes and unpacks to the same webhook.
#![no_main]

use herald::subscriptions::packed::Packed;
use herald::subscriptions::store::{decode, decode_packed, Loaded};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|doc: &[u8]| {
    let id = "wh_fuzz";
    let packed = decode_packed(id, doc);
    match (decode(id, String::new(), Some(doc)), packed) {
        (Loaded::Webhook(webhook), Ok(checked)) => {
            let expected = Packed::pack(&webhook);
            assert!(checked.packed == expected, "packed alike");
            assert_eq!(checked.status, webhook.status);
            assert_eq!(checked.tenant, webhook.tenant);
            let unpacked = checked.packed.unpack().expect("a packed webhook unpacks");
            assert!(unpacked == *webhook, "unpacks to the webhook read");
        }
        (Loaded::Invalid { reason, .. }, Err(refused)) => assert_eq!(reason, refused, "the same reason"),
        (Loaded::Webhook(_), Err(refused)) => panic!("only the packed reader refused: {refused}"),
        (Loaded::Invalid { reason, .. }, Ok(_)) => panic!("only the webhook reader refused: {reason}"),
        (Loaded::Missing(_), _) => unreachable!("a document was given"),
    }
});
