//! Listings within the listing budget (`budget`): a page is read only once twice what it may
//! read is reserved (building and sending the response takes up to about that: the bodies it
//! read, then their JSON — base64 or escaped text — while the rest is still held), and the
//! reservation lives as long as the response body. A page ends by size before any entry that
//! would not fit, even its first; such an entry is read once room for itself is reserved.

use crate::budget::{Reservation, UserBudget};
use crate::error::ApiError;
use axum::body::Body;
use bytes::Bytes;
use serde_json::Value;
use std::future::Future;
use tern_engine::EngineError;
use tern_store::{Page, PageRequest};

/// Bytes reserved per byte a page may read.
pub const RESERVED_PER_BYTE_READ: usize = 2;

/// Reads one page of `page` through `read`, within the budget: returns it with its reservation,
/// which the response must hold until it is sent.
pub async fn read_page<T, F, Fut>(
    budget: &UserBudget,
    page: &PageRequest,
    read: &mut F,
) -> Result<(Page<T>, Reservation), EngineError>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: Future<Output = Result<Page<T>, EngineError>>,
{
    let mut want = page.max_bytes;
    loop {
        let reserve = want.saturating_mul(RESERVED_PER_BYTE_READ);
        // A page whose reservation is the most one may take is read whatever its first entry's
        // size (waiting for more would wait for ever).
        let alone = reserve >= budget.largest_reservation();
        let held = budget.reserve(reserve).await;
        let request = match alone {
            true => PageRequest { fit_first: false, ..page.clone() },
            false => PageRequest { max_bytes: want, fit_first: true, ..page.clone() },
        };
        let result = read(request).await?;
        match result.next_item_bytes {
            Some(needed) if result.items.is_empty() && !alone => {
                // Given back before waiting for more: two listings each holding a part while
                // waiting for the rest would wait for each other.
                drop(held);
                want = needed.max(want.saturating_add(1));
            }
            _ => return Ok((result, held)),
        }
    }
}

/// A JSON array of every item `read` pages through, sent a page at a time: each page is read
/// within the budget only when the client has taken the previous one (whose reservation is
/// then given back), serialised with `to_json` and sent. The first page is read before
/// answering, so that a failure is still an error status; a later one can only cut the
/// response short. Items added or removed meanwhile may or may not appear.
pub async fn stream_array<T, F, Fut>(
    budget: UserBudget,
    mut request: PageRequest,
    mut read: F,
    to_json: fn(&T) -> Value,
) -> Result<Body, ApiError>
where
    T: Send + 'static,
    F: FnMut(PageRequest) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Page<T>, EngineError>> + Send,
{
    let first = read_page(&budget, &request, &mut read).await?;
    request.cursor = first.0.cursor.clone();
    let listing = Listing { budget, request, read, to_json, started: false, first: Some(first), held: None };
    let pieces = futures_util::stream::unfold(Some(listing), |listing| async move {
        let mut listing = listing?;
        // The client took the previous piece.
        listing.held = None;
        let (page, held) = match listing.first.take() {
            Some(first) => first,
            None if listing.request.cursor.is_none() => return None,
            None => match read_page(&listing.budget, &listing.request, &mut listing.read).await {
                Ok(next) => next,
                Err(error) => {
                    tracing::error!(%error, "a listing failed after its answer began");
                    return Some((Err(error), None));
                }
            },
        };
        listing.held = Some(held);
        let mut piece = Vec::new();
        for item in &page.items {
            piece.push(if listing.started { b',' } else { b'[' });
            listing.started = true;
            serde_json::to_writer(&mut piece, &(listing.to_json)(item)).expect("a JSON value serialises");
        }
        listing.request.cursor = page.cursor;
        if listing.request.cursor.is_none() {
            piece.extend_from_slice(if listing.started { b"]" } else { b"[]" });
        }
        Some((Ok(Bytes::from(piece)), Some(listing)))
    });
    Ok(Body::from_stream(pieces))
}

/// Where a streamed listing stands.
struct Listing<T, F> {
    budget: UserBudget,
    /// The next page's request (its cursor `None` once the last page is sent).
    request: PageRequest,
    read: F,
    to_json: fn(&T) -> Value,
    /// The array is open: a piece has been sent with at least one item.
    started: bool,
    /// The first page, read before answering.
    first: Option<(Page<T>, Reservation)>,
    /// The reservation of the piece being sent.
    held: Option<Reservation>,
}
