//! The site `httpd` serves: a page with a visit counter, and notes in JSON.
//!
//! | request                | reply                                        |
//! |------------------------|----------------------------------------------|
//! | `GET /`                | the page; each GET counts one visit          |
//! | `GET /api/visits`      | `{"visits":N}`                               |
//! | `GET /api/notes`       | `{"notes":[{"id":1,"text":"..."},...]}`      |
//! | `POST /api/notes`      | body `{"text":"..."}`: 201 and the new note  |
//! | `GET /api/notes/ID`    | the note, or 404                             |
//! | `DELETE /api/notes/ID` | 204, or 404                                  |
//!
//! `HEAD` is answered wherever `GET` is. Errors are JSON too:
//! `{"error":"..."}`.

use serde::{Deserialize, Serialize};

use crate::connection::Handler;
use crate::http::{Request, Response};

/// The most notes kept: a POST past it is refused with 507, so a client
/// cannot make the domain's memory run out.
pub const MAX_NOTES: usize = 1000;

/// The longest note, in bytes.
pub const MAX_NOTE_BYTES: usize = 4096;

const JSON: &str = "application/json";

/// One note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Note {
    pub id: u64,
    pub text: String,
}

/// What a POST to /api/notes carries.
#[derive(Debug, Deserialize)]
struct NewNote {
    text: String,
}

/// The site's state: plain fields, persistent because the domain's memory is.
#[derive(Debug, Clone, Default)]
pub struct Site {
    /// GET / requests answered, ever.
    pub visits: u64,
    pub notes: Vec<Note>,
    next_id: u64,
}

fn json<T: Serialize>(status: u16, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => Response::new(status, JSON, body),
        Err(_) => Response::empty(500),
    }
}

fn error(status: u16, message: &str) -> Response {
    #[derive(Serialize)]
    struct Error<'a> {
        error: &'a str,
    }
    json(status, &Error { error: message })
}

fn not_allowed(allow: &'static str) -> Response {
    error(405, "method not allowed").with_header("Allow", allow)
}

impl Site {
    /// A site that has had no visit yet.
    pub fn new() -> Site {
        Site::default()
    }

    fn page(&self) -> Response {
        let body = format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Amber httpd</title>\
             </head>\n<body><h1>Hello from Amber</h1>\n<p>This page has been visited \
             {} times.</p>\n<p>The count lives in a domain's memory: it survives reboots, \
             power cuts and moves to another machine.</p></body></html>\n",
            self.visits
        );
        Response::new(200, "text/html; charset=utf-8", body)
    }

    fn add_note(&mut self, request: &Request) -> Response {
        let is_json = request.header("content-type").is_some_and(|value| {
            value
                .split(|&byte| byte == b';')
                .next()
                .is_some_and(|media| media.trim_ascii().eq_ignore_ascii_case(JSON.as_bytes()))
        });
        if !is_json {
            return error(415, "send the note as application/json");
        }
        let new: NewNote = match serde_json::from_slice(&request.body) {
            Ok(new) => new,
            Err(_) => return error(400, "expected {\"text\": \"...\"}"),
        };
        if new.text.len() > MAX_NOTE_BYTES {
            return error(413, "a note holds at most 4096 bytes");
        }
        if self.notes.len() >= MAX_NOTES {
            return error(507, "the site holds 1000 notes already");
        }
        self.next_id += 1;
        let note = Note {
            id: self.next_id,
            text: new.text,
        };
        let location = format!("/api/notes/{}", note.id);
        let response = json(201, &note).with_header("Location", location);
        self.notes.push(note);
        response
    }

    fn note_index(&self, id: &str) -> Option<usize> {
        let id: u64 = id.parse().ok()?;
        self.notes.iter().position(|note| note.id == id)
    }
}

impl Handler for Site {
    fn handle(&mut self, request: &Request) -> Response {
        let method = request.method.as_str();
        let is_get = matches!(method, "GET" | "HEAD");
        match request.path.as_str() {
            "/" if is_get => {
                if method == "GET" {
                    self.visits += 1;
                }
                self.page()
            }
            "/" => not_allowed("GET, HEAD"),
            "/api/visits" if is_get => {
                #[derive(Serialize)]
                struct Visits {
                    visits: u64,
                }
                json(
                    200,
                    &Visits {
                        visits: self.visits,
                    },
                )
            }
            "/api/visits" => not_allowed("GET, HEAD"),
            "/api/notes" if is_get => {
                #[derive(Serialize)]
                struct Notes<'a> {
                    notes: &'a [Note],
                }
                json(200, &Notes { notes: &self.notes })
            }
            "/api/notes" if method == "POST" => self.add_note(request),
            "/api/notes" => not_allowed("GET, HEAD, POST"),
            path => match path.strip_prefix("/api/notes/") {
                Some(id) => match (self.note_index(id), method) {
                    (None, _) => error(404, "no such note"),
                    (Some(index), _) if is_get => json(200, &self.notes[index]),
                    (Some(index), "DELETE") => {
                        self.notes.remove(index);
                        Response::empty(204)
                    }
                    (Some(_), _) => not_allowed("GET, HEAD, DELETE"),
                },
                None => error(404, "not found"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Limits, parse_request};

    fn ask(site: &mut Site, wire: &str) -> (u16, String) {
        let (request, _) = parse_request(wire.as_bytes(), &Limits::default())
            .unwrap()
            .unwrap();
        let response = site.handle(&request);
        (response.status, String::from_utf8(response.body).unwrap())
    }

    #[test]
    fn the_page_counts_its_visits() {
        let mut site = Site::new();
        assert!(
            ask(&mut site, "GET / HTTP/1.1\r\n\r\n")
                .1
                .contains("visited 1 times")
        );
        assert!(
            ask(&mut site, "GET /?x=1 HTTP/1.1\r\n\r\n")
                .1
                .contains("visited 2 times")
        );
        assert_eq!(ask(&mut site, "HEAD / HTTP/1.1\r\n\r\n").0, 200);
        assert_eq!(
            ask(&mut site, "GET /api/visits HTTP/1.1\r\n\r\n"),
            (200, r#"{"visits":2}"#.to_string())
        );
        assert_eq!(ask(&mut site, "POST / HTTP/1.1\r\n\r\n").0, 405);
        assert_eq!(ask(&mut site, "GET /nothing HTTP/1.1\r\n\r\n").0, 404);
    }

    #[test]
    fn notes_are_added_read_and_deleted() {
        let mut site = Site::new();
        let post = |text: &str| {
            format!(
                "POST /api/notes HTTP/1.1\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{text}",
                text.len()
            )
        };
        assert_eq!(
            ask(&mut site, &post(r#"{"text":"milk \"2%\""}"#)),
            (201, r#"{"id":1,"text":"milk \"2%\""}"#.to_string())
        );
        assert_eq!(ask(&mut site, &post(r#"{"text":"eggs"}"#)).0, 201);
        assert_eq!(
            ask(&mut site, "GET /api/notes HTTP/1.1\r\n\r\n").1,
            r#"{"notes":[{"id":1,"text":"milk \"2%\""},{"id":2,"text":"eggs"}]}"#
        );
        assert_eq!(
            ask(&mut site, "DELETE /api/notes/1 HTTP/1.1\r\n\r\n").0,
            204
        );
        assert_eq!(ask(&mut site, "GET /api/notes/1 HTTP/1.1\r\n\r\n").0, 404);
        assert_eq!(
            ask(&mut site, "GET /api/notes/2 HTTP/1.1\r\n\r\n"),
            (200, r#"{"id":2,"text":"eggs"}"#.to_string())
        );
        assert_eq!(ask(&mut site, "PUT /api/notes/2 HTTP/1.1\r\n\r\n").0, 405);
        assert_eq!(ask(&mut site, &post("not json")).0, 400);
        let plain = "POST /api/notes HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi";
        assert_eq!(ask(&mut site, plain).0, 415);
        let long = format!(r#"{{"text":"{}"}}"#, "x".repeat(MAX_NOTE_BYTES + 1));
        assert_eq!(ask(&mut site, &post(&long)).0, 413);
    }

    #[test]
    fn notes_stop_at_the_limit() {
        let mut site = Site::new();
        let post = "POST /api/notes HTTP/1.1\r\nContent-Type: application/json\r\n\
                    Content-Length: 12\r\n\r\n{\"text\":\"n\"}";
        for _ in 0..MAX_NOTES {
            assert_eq!(ask(&mut site, post).0, 201);
        }
        assert_eq!(ask(&mut site, post).0, 507);
    }
}
