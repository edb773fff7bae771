//! Parsing against the RFC 9112 cases a server meets.

use super::*;

fn parse(wire: &[u8]) -> Result<Option<(Request, usize)>, HttpError> {
    parse_request(wire, &Limits::default())
}

#[test]
fn a_request_with_a_length_parses_whole() {
    let wire = b"POST /api/notes?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET";
    let (request, used) = parse(wire).unwrap().unwrap();
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/api/notes");
    assert_eq!(request.query.as_deref(), Some("x=1"));
    assert_eq!(request.header("HOST"), Some(&b"a"[..]));
    assert_eq!(request.body, b"hello");
    assert_eq!(&wire[used..], b"GET");
}

#[test]
fn every_prefix_is_incomplete_not_an_error() {
    let wire = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nTrailer: x\r\n\r\n";
    for end in 0..wire.len() {
        assert_eq!(parse(&wire[..end]), Ok(None), "prefix of {end} bytes");
    }
    let (request, used) = parse(wire).unwrap().unwrap();
    assert_eq!(request.body, b"Wikipedia");
    assert_eq!(used, wire.len());
}

#[test]
fn declared_sizes_over_the_limits_are_refused_before_they_arrive() {
    let limits = Limits {
        max_head_bytes: 64,
        max_headers: 4,
        max_body_bytes: 8,
    };
    let check = |wire: &[u8]| parse_request(wire, &limits);
    assert_eq!(check(&[b'G'; 100]), Err(HttpError::HeadTooLarge));
    assert_eq!(
        check(b"\x01GET"),
        Err(HttpError::BadRequest("not an HTTP/1.x request"))
    );
    let long_head = format!("GET /{} HTTP/1.1\r\n", "a".repeat(80));
    assert_eq!(check(long_head.as_bytes()), Err(HttpError::HeadTooLarge));
    let many = "GET / HTTP/1.1\r\na: 1\r\nb: 1\r\nc: 1\r\nd: 1\r\ne: 1\r\n\r\n";
    assert_eq!(check(many.as_bytes()), Err(HttpError::HeadTooLarge));
    assert_eq!(
        check(b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\n"),
        Err(HttpError::BodyTooLarge)
    );
    assert_eq!(
        check(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n"),
        Err(HttpError::BodyTooLarge)
    );
    assert_eq!(
        check(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n"),
        Err(HttpError::BadRequest("a malformed chunk size"))
    );
}

#[test]
fn ambiguous_framing_is_refused() {
    let both = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(
        parse(both),
        Err(HttpError::BadRequest(
            "both Content-Length and Transfer-Encoding"
        ))
    );
    let twice = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
    assert_eq!(
        parse(twice),
        Err(HttpError::BadRequest("more than one Content-Length"))
    );
    for length in ["-1", "+1", "1 1", "", "0x10"] {
        let wire = format!("POST / HTTP/1.1\r\nContent-Length: {length}\r\n\r\n");
        assert_eq!(
            parse(wire.as_bytes()),
            Err(HttpError::BadRequest("a malformed Content-Length")),
            "{length:?}"
        );
    }
    let gzip = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n";
    assert_eq!(parse(gzip), Err(HttpError::UnknownTransferCoding));
    let bad_chunk = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n";
    assert_eq!(
        parse(bad_chunk),
        Err(HttpError::BadRequest("a chunk not followed by CRLF"))
    );
}

#[test]
fn replies_encode_with_length_and_connection() {
    let mut out = Vec::new();
    Response::new(200, "text/plain", "hi")
        .with_header("X-A", "b")
        .encode(true, false, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: b\r\nContent-Length: 2\r\n\
         Connection: keep-alive\r\n\r\nhi"
    );
    let mut out = Vec::new();
    Response::empty(204).encode(false, false, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
    );
}
