//! The HTTP side of the admin CLI: the credential (from `--token`, `KEYLEDGER_TOKEN` or a
//! private `--token-file`), requests with timeouts, and the mapping of every answer and
//! transport failure to an [`Exit`] status with the API's error code and message.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{self, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use serde_json::value::RawValue;

use super::{CliError, ClientOpts, Exit, ListOpts, Result};

/// Seconds allowed to open a connection (within the request timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A secret that never shows up in `Debug` output or messages.
struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token([redacted])")
    }
}

/// Reads the credential: `--token-file` if given (refused when group or others have any
/// permission on it), else `--token` / `KEYLEDGER_TOKEN`; surrounding whitespace stripped.
fn load_token(opts: &ClientOpts) -> Result<Token> {
    let raw = match (&opts.token_file, &opts.token) {
        (Some(path), _) => read_token_file(path)?,
        (None, Some(token)) => token.clone(),
        (None, None) => {
            return Err(CliError::usage(
                "no credential: pass --token-file FILE, or set KEYLEDGER_TOKEN (or --token)",
            )
            .into());
        }
    };
    let token = raw.trim();
    if token.is_empty() {
        return Err(CliError::usage("the credential is empty").into());
    }
    Ok(Token(token.to_string()))
}

fn read_token_file(path: &Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let metadata = std::fs::metadata(path)
        .map_err(|e| CliError::usage(format!("reading the token file {shown}: {e}")))?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CliError::usage(format!(
            "the token file {shown} is open to group or others (mode {mode:04o}); \
             run `chmod 600 {shown}`"
        ))
        .into());
    }
    std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("reading the token file {shown}: {e}")).into())
}

/// The server's base URL from `--addr`, `http://` added to a bare `host:port`.
fn base_url(addr: &str) -> Result<Url> {
    let addr = addr.trim();
    let full = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let bad = |why: &str| CliError::usage(format!("--addr {addr}: {why}"));
    let url = Url::parse(&full).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("only http:// and https:// are supported").into());
    }
    if url.host().is_none() || url.query().is_some() || url.fragment().is_some() {
        return Err(bad("expected http(s)://HOST[:PORT][/PREFIX]").into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            bad("put the credential in --token-file or KEYLEDGER_TOKEN, not the URL").into(),
        );
    }
    Ok(url)
}

/// A successful answer: its status and body.
pub struct Answer {
    /// The HTTP status (2xx).
    pub status: StatusCode,
    /// The body, as received.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).map_err(|e| not_the_api(&e.to_string()).into())
    }
}

/// A connection to the API with one credential.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    auth: HeaderValue,
    timeout: Duration,
}

impl Client {
    /// A client for `--addr` with the credential of `opts`; usage errors (exit 2) for a bad
    /// address or credential, before anything is sent.
    pub fn new(opts: &ClientOpts) -> Result<Client> {
        let base = base_url(&opts.addr)?;
        let token = load_token(opts)?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.0))
            .map_err(|_| CliError::usage("the credential holds characters a header cannot"))?;
        auth.set_sensitive(true);
        let http = reqwest::Client::builder()
            .user_agent(concat!("keyledger-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT.min(Duration::from_secs(opts.timeout)))
            .read_timeout(Duration::from_secs(opts.timeout))
            // A bearer credential is never sent on to wherever a redirect points.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| anyhow::anyhow!("setting up the HTTP client: {e}"))?;
        Ok(Client {
            http,
            base,
            auth,
            timeout: Duration::from_secs(opts.timeout),
        })
    }

    /// The server's base URL, as shown in messages.
    pub fn addr(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    fn url(&self, path: &str, query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        let joined = format!("{}{path}", self.base.path().trim_end_matches('/'));
        url.set_path(&joined);
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in query {
                pairs.append_pair(name, value);
            }
        }
        url
    }

    /// `GET path?query`.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Answer> {
        self.send(Method::GET, path, query, None, None).await
    }

    /// A request with an optional JSON body and `If-Match`; a non-2xx answer is an error
    /// carrying its exit status and the API's error code and message.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Answer> {
        let response = self
            .request(method, path, query, body, if_match)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| self.transport(&e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.transport(&e))?;
        if status.is_success() {
            Ok(Answer { status, body })
        } else {
            Err(refusal(status, &body).into())
        }
    }

    /// `GET path?query` whose body is read by the caller as it arrives (no overall
    /// timeout: only the time between two reads is limited). A non-2xx answer is an error
    /// as in [`Client::send`].
    pub async fn stream(&self, path: &str, query: &[(&str, String)]) -> Result<reqwest::Response> {
        let response = self
            .request(Method::GET, path, query, None, None)
            .send()
            .await
            .map_err(|e| self.transport(&e))?;
        let status = response.status();
        if status.is_success() {
            Ok(response)
        } else {
            let body = response.bytes().await.map_err(|e| self.transport(&e))?;
            Err(refusal(status, &body).into())
        }
    }

    /// The next piece of a streamed body; `None` at its end.
    pub async fn chunk(&self, response: &mut reqwest::Response) -> Result<Option<Bytes>> {
        response
            .chunk()
            .await
            .map_err(|e| self.transport(&e).into())
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .request(method, self.url(path, query))
            .header(header::AUTHORIZATION, self.auth.clone());
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(tag) = if_match {
            request = request.header(header::IF_MATCH, tag);
        }
        request
    }

    /// A failure to get an answer at all: exit 5.
    fn transport(&self, error: &reqwest::Error) -> CliError {
        let addr = self.addr();
        let message = if error.is_timeout() {
            format!(
                "no answer from {addr} in time (--timeout {}s)",
                self.timeout.as_secs()
            )
        } else if error.is_connect() {
            format!("cannot reach the server at {addr}: {}", root_cause(error))
        } else {
            format!("talking to the server at {addr}: {}", root_cause(error))
        };
        CliError::new(Exit::Unavailable, message)
    }
}

/// The innermost cause of an error (e.g. "Connection refused (os error 111)").
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// An answer that is not what the API sends: exit 5 (something else answers there).
pub fn not_the_api(why: &str) -> CliError {
    CliError::new(
        Exit::Unavailable,
        format!("the server's answer is not the keyledger API's: {why}"),
    )
}

/// The error of a non-2xx answer: its exit status and the API's code and message.
fn refusal(status: StatusCode, body: &[u8]) -> CliError {
    let exit = match status.as_u16() {
        // 429 is the failed-authentication lock-out of the client's address.
        401 | 403 | 429 => Exit::Auth,
        404 => Exit::NotFound,
        // 408: the request did not reach the server in time, like a timeout.
        408 | 500..=599 => Exit::Unavailable,
        _ => Exit::Refused,
    };
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: ApiError,
    }
    #[derive(serde::Deserialize)]
    struct ApiError {
        code: String,
        message: String,
    }
    let message = match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope { error }) => format!(
            "{}: {} (HTTP {})",
            super::output::clean(&error.code),
            super::output::clean(&error.message),
            status.as_u16()
        ),
        Err(_) => format!("the server answered HTTP {status} without an API error"),
    };
    CliError::new(exit, message)
}

/// One page of a list: its items (unchanged JSON) and the cursor of the next page.
struct Page {
    items: Vec<Box<RawValue>>,
    next: Option<String>,
}

fn parse_page(body: &[u8], items: &str, cursor: &str) -> Result<Page> {
    let mut fields: std::collections::BTreeMap<String, Box<RawValue>> =
        serde_json::from_slice(body).map_err(|e| not_the_api(&e.to_string()))?;
    let list = fields
        .remove(items)
        .ok_or_else(|| not_the_api(&format!("no `{items}`")))?;
    let list: Vec<Box<RawValue>> =
        serde_json::from_str(list.get()).map_err(|e| not_the_api(&e.to_string()))?;
    let next = match fields
        .get(cursor)
        .map(|raw| serde_json::from_str::<Value>(raw.get()))
    {
        None | Some(Ok(Value::Null)) => None,
        Some(Ok(Value::String(s))) => Some(s),
        Some(Ok(Value::Number(n))) => Some(n.to_string()),
        Some(_) => return Err(not_the_api(&format!("a bad `{cursor}`")).into()),
    };
    Ok(Page { items: list, next })
}

/// A paged list route and the names its pages use.
pub struct Listing<'a> {
    /// The route, e.g. `/v1/admin/api-keys`.
    pub path: &'a str,
    /// The field holding the items, e.g. `api_keys`.
    pub items: &'a str,
    /// The answer's cursor field (`next_after`, `next_before`).
    pub cursor: &'a str,
    /// The query parameter taking the cursor (`after`, `before`).
    pub param: &'static str,
}

/// Every item of a list, page after page (`page_size` each, starting at `start`), as
/// the API's JSON object of one page holding them all, with a null cursor.
pub async fn list_all(
    client: &Client,
    listing: &Listing<'_>,
    query: &[(&'static str, String)],
    page_size: u32,
    start: Option<String>,
) -> Result<String> {
    let mut items: Vec<Box<RawValue>> = Vec::new();
    let mut cursor = start;
    loop {
        let mut page_query = query.to_vec();
        page_query.push(("limit", page_size.to_string()));
        if let Some(c) = &cursor {
            page_query.push((listing.param, c.clone()));
        }
        let answer = client.get(listing.path, &page_query).await?;
        let page = parse_page(&answer.body, listing.items, listing.cursor)?;
        let empty = page.items.is_empty();
        items.extend(page.items);
        match page.next {
            Some(next) if !empty && cursor.as_deref() != Some(next.as_str()) => {
                cursor = Some(next);
            }
            Some(_) => return Err(not_the_api("a page cursor that does not advance").into()),
            None => break,
        }
    }
    let joined: Vec<&str> = items.iter().map(|i| i.get()).collect();
    Ok(format!(
        "{{\"{}\":[{}],\"{}\":null}}",
        listing.items,
        joined.join(","),
        listing.cursor
    ))
}

/// A list as the command asks for it: one page with `--limit`, else every page (see
/// [`list_all`]); the API's JSON object either way.
pub async fn fetch_list(
    client: &Client,
    listing: &Listing<'_>,
    opts: &ListOpts,
    status: Option<&str>,
) -> Result<Vec<u8>> {
    let mut query = opts.query(status);
    let after = opts.after.map(|a| a.to_string());
    match opts.limit {
        Some(limit) => {
            query.push(("limit", limit.to_string()));
            if let Some(after) = after {
                query.push((listing.param, after));
            }
            Ok(client.get(listing.path, &query).await?.body.to_vec())
        }
        None => Ok(list_all(client, listing, &query, opts.page_size, after)
            .await?
            .into_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_a_scheme_and_refuse_credentials() {
        assert_eq!(
            base_url("127.0.0.1:9").expect("bare").as_str(),
            "http://127.0.0.1:9/"
        );
        assert_eq!(
            base_url("https://kl.example/prefix")
                .expect("prefix")
                .path(),
            "/prefix"
        );
        for bad in ["ftp://x", "http://user:pw@x", "http://x/?a=b", "http://"] {
            let e = base_url(bad).expect_err(bad);
            assert_eq!(super::super::exit_of(&e), Exit::Usage, "{bad}");
        }
    }

    #[test]
    fn refusals_map_to_exit_codes_and_name_the_code() {
        let body = br#"{"error":{"code":"name_taken","message":"taken"}}"#;
        for (status, exit) in [
            (409, Exit::Refused),
            (412, Exit::Refused),
            (422, Exit::Refused),
            (400, Exit::Refused),
            (401, Exit::Auth),
            (403, Exit::Auth),
            (429, Exit::Auth),
            (404, Exit::NotFound),
            (408, Exit::Unavailable),
            (500, Exit::Unavailable),
            (503, Exit::Unavailable),
        ] {
            let e = refusal(StatusCode::from_u16(status).expect("status"), body);
            assert_eq!(e.exit, exit, "{status}");
            assert_eq!(e.message, format!("name_taken: taken (HTTP {status})"));
        }
        let e = refusal(StatusCode::BAD_GATEWAY, b"<html>");
        assert_eq!(e.exit, Exit::Unavailable);
    }

    #[test]
    fn pages_keep_items_byte_for_byte() {
        let page = parse_page(
            br#"{"api_keys":[{"b":1,"a":2},{"z":null}],"next_after":"x"}"#,
            "api_keys",
            "next_after",
        )
        .expect("page");
        let items: Vec<&str> = page.items.iter().map(|i| i.get()).collect();
        assert_eq!(items, [r#"{"b":1,"a":2}"#, r#"{"z":null}"#]);
        assert_eq!(page.next.as_deref(), Some("x"));
        let page = parse_page(
            br#"{"events":[],"next_before":12}"#,
            "events",
            "next_before",
        )
        .expect("page");
        assert_eq!(page.next.as_deref(), Some("12"));
    }
}
