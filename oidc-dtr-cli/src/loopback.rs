//! The loopback redirect listener (RFC 8252 §7.3): `http://127.0.0.1:<port>/callback`
//! on a port the OS picks, for the one redirect of the authorization
//! response (query or `form_post`).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::error::{CliError, io, one_line};
use crate::lib_api::{CallbackResponse, DtrClient, PendingAuthorization};

/// The path of the redirect URI.
pub(crate) const CALLBACK_PATH: &str = "/callback";
/// Request line and headers at most this long.
const MAX_HEAD: usize = 16 * 1024;
/// A `form_post` body at most this long.
const MAX_BODY: usize = 64 * 1024;
/// Time a connection gets to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener on the loopback interface.
#[derive(Debug)]
pub(crate) struct Loopback {
    listener: TcpListener,
    redirect_uri: String,
}

/// One request that reached the listener.
enum Request {
    /// `GET /callback?query`.
    Query(String),
    /// `POST /callback` with a form body.
    Form(Vec<u8>),
    /// Anything else: answered and ignored.
    Other(u16),
}

impl Loopback {
    /// Binds `127.0.0.1:port` (0: a random free port).
    pub(crate) async fn bind(port: u16) -> Result<Loopback, CliError> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.map_err(|e| {
            CliError::usage(
                format!("cannot listen on 127.0.0.1:{port} for the redirect: {e}"),
                "pick another --redirect-port, or 0 for a random one",
            )
        })?;
        let addr = listener
            .local_addr()
            .map_err(|e| io("reading the listener's address", e))?;
        Ok(Loopback {
            listener,
            redirect_uri: format!("http://127.0.0.1:{}{CALLBACK_PATH}", addr.port()),
        })
    }

    /// The redirect URI to register with the request.
    pub(crate) fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Waits for a valid authorization response and answers the browser.
    /// Requests that fail validation (wrong `state`, say) get an error
    /// page and are otherwise ignored: only the real response ends the wait.
    pub(crate) async fn receive(
        &self,
        client: &DtrClient,
        pending: &PendingAuthorization,
        quiet: bool,
    ) -> Result<CallbackResponse, CliError> {
        loop {
            let (mut stream, _) = self
                .listener
                .accept()
                .await
                .map_err(|e| io("accepting the redirect", e))?;
            let req = match tokio::time::timeout(READ_TIMEOUT, read_request(&mut stream)).await {
                Ok(Ok(r)) => r,
                Ok(Err(status)) => Request::Other(status),
                Err(_) => Request::Other(408),
            };
            let checked = match req {
                Request::Query(q) => client.callback(pending, &q),
                Request::Form(body) => client.callback_form(pending, &body),
                Request::Other(status) => {
                    let _ = respond(&mut stream, status, "dtr", "Nothing here.").await;
                    continue;
                }
            };
            match checked {
                Ok(resp) => {
                    let (title, text) = match &resp {
                        CallbackResponse::Error(e) => (
                            "Verification not started",
                            format!("The provider answered: {e}. Return to the terminal."),
                        ),
                        _ => (
                            "Verification started",
                            "The provider will decide later. You can close this window and return to the terminal.".to_owned(),
                        ),
                    };
                    let _ = respond(&mut stream, 200, title, &text).await;
                    return Ok(resp);
                }
                Err(e) => {
                    if !quiet {
                        eprintln!(
                            "dtr: ignored an invalid redirect on the loopback listener: {}",
                            one_line(&e.to_string())
                        );
                    }
                    let _ = respond(
                        &mut stream,
                        400,
                        "Invalid response",
                        &format!("This response was not accepted: {e}"),
                    )
                    .await;
                }
            }
        }
    }
}

/// Reads one HTTP/1.1 request; `Err(status)` for one to refuse.
async fn read_request(stream: &mut TcpStream) -> Result<Request, u16> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 2048];
    let (head_len, method, path, content_length, is_form) = loop {
        let n = stream.read(&mut chunk).await.map_err(|_| 400u16)?;
        if n == 0 {
            return Err(400);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let method = req.method.unwrap_or("").to_owned();
                let path = req.path.unwrap_or("").to_owned();
                let mut content_length = 0usize;
                let mut is_form = false;
                for h in req.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        content_length = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse().ok())
                            .ok_or(400u16)?;
                    } else if h.name.eq_ignore_ascii_case("content-type") {
                        is_form = h
                            .value
                            .to_ascii_lowercase()
                            .starts_with(b"application/x-www-form-urlencoded");
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        return Err(411);
                    }
                }
                break (len, method, path, content_length, is_form);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => return Err(431),
            Err(_) => return Err(400),
        }
    };
    let (p, query) = match path.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (path.clone(), String::new()),
    };
    if p != CALLBACK_PATH {
        return Err(404);
    }
    match method.as_str() {
        "GET" => Ok(Request::Query(query)),
        "POST" => {
            if !is_form {
                return Err(415);
            }
            if content_length > MAX_BODY {
                return Err(413);
            }
            let mut body = buf[head_len..].to_vec();
            while body.len() < content_length {
                let n = stream.read(&mut chunk).await.map_err(|_| 400u16)?;
                if n == 0 {
                    return Err(400);
                }
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(content_length);
            Ok(Request::Form(body))
        }
        _ => Err(405),
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    title: &str,
    text: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\"><h1>{t}</h1><p>{x}</p></body></html>",
        t = html_escape(title),
        x = html_escape(text)
    );
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nreferrer-policy: no-referrer\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
