//! The workflow scenario's endpoint, checked without a server.

use super::*;

#[test]
fn base64_decodes_the_standard_alphabet() {
    assert_eq!(base64_decode("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
    assert_eq!(base64_decode("aGVsbG8").as_deref(), Some(&b"hello"[..]));
    assert_eq!(base64_decode("+/8=").as_deref(), Some(&[0xfb, 0xff][..]));
    assert_eq!(base64_decode("").as_deref(), Some(&b""[..]));
    assert_eq!(base64_decode("a"), None);
    assert_eq!(base64_decode("a-b_"), None);
}

#[test]
fn records_count_the_steps_after_the_initial_payload() {
    let initial = json!({ "messageId": "m0", "body": "eyJzZXEiOjF9", "callType": "step" });
    let step = |n: u64, body: &str| json!({ "messageId": format!("m{n}"), "body": body, "callType": "step" });
    // {"stepId":1,"stepType":"Run"}
    let first = step(1, "eyJzdGVwSWQiOjEsInN0ZXBUeXBlIjoiUnVuIn0=");
    assert_eq!(steps_done(std::slice::from_ref(&initial)), Ok(0));
    assert_eq!(steps_done(&[initial.clone(), first.clone()]), Ok(1));
    // The same step twice is not step 2.
    assert!(steps_done(&[initial.clone(), first.clone(), first]).is_err());
    assert!(steps_done(&[]).is_err());
    assert!(steps_done(&[step(0, "eyJ4IjoxfQ==")]).is_err());
}

#[test]
fn used_bytes_are_pages_less_the_free_list() {
    let mut header = vec![0u8; 100];
    header[..16].copy_from_slice(b"SQLite format 3\0");
    header[16..18].copy_from_slice(&4096u16.to_be_bytes());
    header[24..28].copy_from_slice(&7u32.to_be_bytes());
    header[28..32].copy_from_slice(&100u32.to_be_bytes());
    header[36..40].copy_from_slice(&10u32.to_be_bytes());
    header[92..96].copy_from_slice(&7u32.to_be_bytes());
    assert_eq!(used_bytes(&header), Some(90 * 4096));
    header[92..96].copy_from_slice(&6u32.to_be_bytes());
    assert_eq!(used_bytes(&header), None);
    assert_eq!(used_bytes(b"not a database"), None);
}
