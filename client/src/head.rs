//! Response heads, parsed from whatever bytes arrived so far.

/// A complete response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    /// Bytes the head took: the body starts there.
    pub len: usize,
}

/// The bytes are not an HTTP/1 response (or its head is absurdly long).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotHttp;

/// Longest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// Parses a response head from `buf`: `Ok(None)` while it is incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, NotHttp> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut res = httparse::Response::new(&mut headers);
    match res.parse(buf) {
        Ok(httparse::Status::Complete(len)) => Ok(Some(Head {
            status: res.code.ok_or(NotHttp)?,
            reason: res.reason.unwrap_or("").to_string(),
            headers: res
                .headers
                .iter()
                .map(|h| {
                    // header values are ASCII nearly always: no lossy scan then
                    let value = match std::str::from_utf8(h.value) {
                        Ok(v) => v.to_string(),
                        Err(_) => String::from_utf8_lossy(h.value).into_owned(),
                    };
                    (h.name.to_string(), value)
                })
                .collect(),
            len,
        })),
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => Ok(None),
        _ => Err(NotHttp),
    }
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn content_length(&self) -> Option<usize> {
        self.header("content-length")?.trim().parse().ok()
    }

    pub fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_once_complete() {
        let wire = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nTransfer-Encoding: chunked\r\n\r\nbody";
        for cut in 0..wire.len() - 4 {
            assert_eq!(parse_head(&wire[..cut]), Ok(None), "cut at {cut}");
        }
        let head = parse_head(wire).unwrap().unwrap();
        assert_eq!(head.status, 503);
        assert_eq!(head.header("retry-after"), Some("7"));
        assert!(head.chunked());
        assert_eq!(&wire[head.len..], b"body");
        assert_eq!(parse_head(b"\x16\x03\x01garbage\r\n\r\n"), Err(NotHttp));
    }
}
