//! Paging, search and sorting of the admin lists (API keys, users, tokens), the same way
//! for all three: `limit` (1–1000, default 100), `after` (the id of the last item of the
//! previous page; exclusive), `q` (a case- and width-insensitive substring of the name or
//! email) and `sort` (`created`, `name`, `last_used`, each optionally prefixed by `-` for
//! descending). Answers carry `next_after`: the id to pass as `after` for the next page,
//! `null` at the end.
//!
//! The cursor is an id, not an offset: the next page starts right after where that item
//! sorts now, so an item created or deleted between two requests neither repeats nor hides
//! another. An item that changed its sort value between pages (a rename under
//! `sort=name`) may move across the cursor; that is the usual trade of keyset paging.

use uuid::Uuid;

use super::ApiError;
use super::audit::{DEFAULT_PAGE, MAX_PAGE};
use crate::domain::{Timestamp, text};

/// What an admin list is ordered by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortBy {
    Created,
    Name,
    LastUsed,
}

/// A parsed `limit`/`after`/`q`/`sort`.
#[derive(Clone, Debug)]
pub struct ListRequest {
    pub limit: usize,
    pub after: Option<Uuid>,
    /// Folded search text.
    pub q: Option<String>,
    pub sort: SortBy,
    pub descending: bool,
}

impl ListRequest {
    /// Parses the raw parameters; `sorts` are the sort fields this list offers.
    pub fn parse(
        limit: Option<usize>,
        after: Option<&str>,
        q: Option<&str>,
        sort: Option<&str>,
        sorts: &[SortBy],
    ) -> Result<ListRequest, ApiError> {
        let limit = limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("limit must be between 1 and {MAX_PAGE}"),
            ));
        }
        let after = match after {
            None | Some("") => None,
            Some(raw) => Some(Uuid::parse_str(raw).map_err(|_| {
                ApiError::bad_request(
                    "invalid_query",
                    "after must be the id of an item of this list",
                )
            })?),
        };
        let q = match q.map(str::trim) {
            None | Some("") => None,
            Some(q) if q.chars().count() > 100 => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    "q must be at most 100 characters",
                ));
            }
            Some(q) => Some(text::fold(q)),
        };
        let (descending, field) = match sort {
            None | Some("") => (false, "created"),
            Some(s) => match s.strip_prefix('-') {
                Some(field) => (true, field),
                None => (false, s),
            },
        };
        let sort = match field {
            "created" => SortBy::Created,
            "name" | "email" => SortBy::Name,
            "last_used" => SortBy::LastUsed,
            _ => return Err(bad_sort(sorts)),
        };
        if !sorts.contains(&sort) {
            return Err(bad_sort(sorts));
        }
        Ok(ListRequest {
            limit,
            after,
            q,
            sort,
            descending,
        })
    }

    /// Whether a name or email matches `q`.
    pub fn matches(&self, name: &str) -> bool {
        self.q
            .as_deref()
            .is_none_or(|q| text::fold(name).contains(q))
    }
}

fn bad_sort(sorts: &[SortBy]) -> ApiError {
    let names: Vec<&str> = sorts
        .iter()
        .map(|s| match s {
            SortBy::Created => "created",
            SortBy::Name => "name",
            SortBy::LastUsed => "last_used",
        })
        .collect();
    ApiError::bad_request(
        "invalid_query",
        format!(
            "sort must be one of {} (prefix - for descending)",
            names.join(", ")
        ),
    )
}

/// Where an item sorts: by the chosen field, then by creation (`seq`), so the order is
/// total and stable.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SortKey {
    name: Option<String>,
    last_used: Option<Timestamp>,
    seq: u64,
}

impl SortKey {
    /// The key of an item with this name, last use and creation seq, under `sort`.
    pub fn of(sort: SortBy, name: &str, last_used: Option<Timestamp>, seq: u64) -> SortKey {
        SortKey {
            name: (sort == SortBy::Name).then(|| text::fold(name)),
            last_used: if sort == SortBy::LastUsed {
                last_used
            } else {
                None
            },
            seq,
        }
    }
}

/// One page of `items` (the list after filtering, each with its id and sort key).
/// `cursor` is the sort key of the `after` item, looked up among all items (filtered or
/// not); `None` with `after` set means the id is unknown.
pub fn page<T>(
    request: &ListRequest,
    mut items: Vec<(SortKey, Uuid, T)>,
    cursor: Option<SortKey>,
) -> Result<(Vec<T>, Option<Uuid>), ApiError> {
    if request.after.is_some() && cursor.is_none() {
        return Err(ApiError::bad_request(
            "invalid_query",
            "after must be the id of an item of this list",
        ));
    }
    items.sort_by(|a, b| a.0.cmp(&b.0));
    if request.descending {
        items.reverse();
    }
    let start = match &cursor {
        None => 0,
        Some(c) if request.descending => items.partition_point(|(k, ..)| k >= c),
        Some(c) => items.partition_point(|(k, ..)| k <= c),
    };
    let mut rest = items.into_iter().skip(start);
    let mut out = Vec::new();
    let mut last = None;
    for (_, id, item) in rest.by_ref().take(request.limit) {
        last = Some(id);
        out.push(item);
    }
    let next_after = if rest.next().is_some() { last } else { None };
    Ok((out, next_after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(limit: usize, after: Option<Uuid>, sort: SortBy, descending: bool) -> ListRequest {
        ListRequest {
            limit,
            after,
            q: None,
            sort,
            descending,
        }
    }

    fn items(names: &[&str]) -> Vec<(SortKey, Uuid, String)> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    SortKey::of(SortBy::Name, n, None, i as u64),
                    Uuid::from_u128(i as u128 + 1),
                    n.to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn pages_walk_the_whole_list_once() {
        let all = items(&["d", "B", "a", "c", "e"]);
        for descending in [false, true] {
            let mut seen = Vec::new();
            let mut after: Option<Uuid> = None;
            loop {
                let cursor = after.and_then(|id| {
                    all.iter()
                        .find(|(_, i, _)| *i == id)
                        .map(|(k, ..)| k.clone())
                });
                let (page, next) = page(
                    &request(2, after, SortBy::Name, descending),
                    all.clone(),
                    cursor,
                )
                .expect("page");
                assert!(page.len() <= 2);
                seen.extend(page);
                match next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            let mut expected = vec!["a", "B", "c", "d", "e"];
            if descending {
                expected.reverse();
            }
            assert_eq!(seen, expected);
        }
    }

    #[test]
    fn unknown_cursor_and_bad_parameters_are_refused() {
        let all = items(&["a"]);
        assert!(
            page(
                &request(2, Some(Uuid::from_u128(99)), SortBy::Created, false),
                all,
                None
            )
            .is_err()
        );
        let sorts = [SortBy::Created, SortBy::Name];
        assert!(ListRequest::parse(Some(0), None, None, None, &sorts).is_err());
        assert!(ListRequest::parse(Some(1001), None, None, None, &sorts).is_err());
        assert!(ListRequest::parse(None, Some("x"), None, None, &sorts).is_err());
        assert!(ListRequest::parse(None, None, None, Some("last_used"), &sorts).is_err());
        assert!(ListRequest::parse(None, None, None, Some("size"), &sorts).is_err());
        let ok = ListRequest::parse(None, None, Some(" ＣI "), Some("-name"), &sorts).expect("ok");
        assert!(ok.descending && ok.sort == SortBy::Name && ok.limit == 100);
        assert!(ok.matches("my-ci-bot") && !ok.matches("deploy"));
    }
}
