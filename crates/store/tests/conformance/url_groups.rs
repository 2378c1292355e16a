//! Conformance: URL groups keep their endpoints in order, count their limits and their size
//! without reading the groups, and list a page at a time.

use super::*;

pub async fn run_all(backend: &mut impl Backend) {
    url_groups_keep_endpoint_order(backend).await;
    url_group_limits_are_counted_and_write_nothing(backend).await;
    url_groups_are_listed_by_pages(backend).await;
}

/// Limits no test reaches.
const ROOMY: GroupLimits = GroupLimits { groups: 100, endpoints: 100 };

fn endpoint(url: &str, name: Option<&str>) -> Endpoint {
    Endpoint { url: url.into(), name: name.map(str::to_string) }
}

async fn url_groups_keep_endpoint_order(backend: &mut impl Backend) {
    let store = open(backend, 0).await;
    store
        .add_endpoints(
            USER,
            "g",
            vec![endpoint("http://127.0.0.1:1/b", Some("First endpoint")), endpoint("http://127.0.0.1:1/a", None)],
            1,
            ROOMY,
        )
        .await
        .unwrap();
    store
        .add_endpoints(
            USER,
            "g",
            vec![endpoint("http://127.0.0.1:1/b", Some("renamed")), endpoint("http://127.0.0.1:1/c", None)],
            2,
            ROOMY,
        )
        .await
        .unwrap();
    let group = store.get_group(USER, "g").await.unwrap().unwrap();
    assert_eq!((group.created_at, group.updated_at), (1, 2));
    assert_eq!(
        group.endpoints,
        vec![
            endpoint("http://127.0.0.1:1/b", Some("renamed")),
            endpoint("http://127.0.0.1:1/a", None),
            endpoint("http://127.0.0.1:1/c", None)
        ]
    );
    assert!(store.get_group(OTHER, "g").await.unwrap().is_none());
    // The engine's read of a group (a schedule's tick) answers the same.
    assert_eq!(store.get_group_for_engine(USER, "g").await.unwrap().as_ref(), Some(&group));
    assert!(store.get_group_for_engine(OTHER, "g").await.unwrap().is_none());
    // Default headers: replaced as a whole, cleared by an empty list, only on existing groups.
    assert!(group.default_headers.is_empty());
    let mut defaults = HeaderList::new();
    defaults.push("Upstash-Retries", "3");
    defaults.push("Upstash-Forward-X", "a");
    assert!(store.set_group_headers(USER, "g", defaults.clone(), 3).await.unwrap());
    assert_eq!(
        store.list_groups(USER, &page(10)).await.unwrap().items[0].default_headers,
        defaults,
        "listed with its defaults"
    );
    let group = store.get_group(USER, "g").await.unwrap().unwrap();
    assert_eq!((group.default_headers.clone(), group.updated_at), (defaults, 3));
    // Its size, to reserve before reading it: at least its name, URLs, endpoint names and headers.
    let bytes = store.group_bytes(USER, "g").await.unwrap().expect("a size");
    let endpoints: usize = group.endpoints.iter().map(|e| e.url.len() + e.name.as_ref().map_or(0, String::len)).sum();
    let headers: usize = group.default_headers.iter().map(|(name, value)| name.len() + value.len()).sum();
    assert!(bytes >= group.name.len() + endpoints + headers, "{bytes}");
    assert!(store.group_bytes(OTHER, "g").await.unwrap().is_none());
    assert!(store.group_bytes(USER, "missing").await.unwrap().is_none());
    assert!(!store.set_group_headers(USER, "missing", HeaderList::new(), 3).await.unwrap());
    assert!(!store.set_group_headers(OTHER, "g", HeaderList::new(), 3).await.unwrap());
    assert!(store.set_group_headers(USER, "g", HeaderList::new(), 3).await.unwrap());
    assert!(store.list_groups(USER, &page(10)).await.unwrap().items[0].default_headers.is_empty());
    store
        .remove_endpoints(
            USER,
            "g",
            vec![endpoint("http://127.0.0.1:1/a", None), Endpoint { url: String::new(), name: Some("renamed".into()) }],
            3,
        )
        .await
        .unwrap();
    assert_eq!(
        store.list_groups(USER, &page(10)).await.unwrap().items[0].endpoints,
        vec![endpoint("http://127.0.0.1:1/c", None)]
    );
    store.remove_endpoints(USER, "g", vec![endpoint("http://127.0.0.1:1/c", None)], 4).await.unwrap();
    assert!(store.get_group(USER, "g").await.unwrap().is_none(), "an emptied group is deleted");
    store.add_endpoints(USER, "h", vec![endpoint("http://127.0.0.1:1/x", None)], 5, ROOMY).await.unwrap();
    assert!(store.delete_group(USER, "h").await.unwrap());
    assert!(!store.delete_group(USER, "h").await.unwrap());
    store.shutdown().await.unwrap();
}

async fn url_group_limits_are_counted_and_write_nothing(backend: &mut impl Backend) {
    let store = open(backend, 0).await;
    let limits = GroupLimits { groups: 2, endpoints: 3 };
    let add = |group: &'static str, urls: &[&str]| {
        let endpoints: Vec<Endpoint> = urls.iter().map(|url| endpoint(url, None)).collect();
        let store = &store;
        async move { store.add_endpoints(USER, group, endpoints, 1, limits).await.unwrap() }
    };
    assert_eq!(add("a", &["http://127.0.0.1:1/1", "http://127.0.0.1:1/2"]).await, EndpointsAdded::Added);
    // Known URLs (renamed) and repeated ones count once.
    let urls = ["http://127.0.0.1:1/1", "http://127.0.0.1:1/3", "http://127.0.0.1:1/3"];
    assert_eq!(add("a", &urls).await, EndpointsAdded::Added);
    assert_eq!(add("a", &["http://127.0.0.1:1/4"]).await, EndpointsAdded::EndpointLimitReached);
    assert_eq!(store.get_group(USER, "a").await.unwrap().unwrap().endpoints.len(), 3, "nothing written");
    assert_eq!(add("b", &["http://127.0.0.1:1/1"]).await, EndpointsAdded::Added);
    assert_eq!(add("c", &["http://127.0.0.1:1/1"]).await, EndpointsAdded::GroupLimitReached);
    assert!(store.get_group(USER, "c").await.unwrap().is_none(), "nothing written");
    assert_eq!(add("b", &["http://127.0.0.1:1/2"]).await, EndpointsAdded::Added, "an existing group grows");
    let other = store.add_endpoints(OTHER, "c", vec![endpoint("http://127.0.0.1:1/1", None)], 1, limits);
    assert_eq!(other.await.unwrap(), EndpointsAdded::Added, "limits are per user");
    store.shutdown().await.unwrap();
}

async fn url_groups_are_listed_by_pages(backend: &mut impl Backend) {
    let store = open(backend, 0).await;
    for (group, url_length) in [("a", 10), ("b", 5_000), ("c", 10), ("d", 10)] {
        let url = format!("http://127.0.0.1:1/{}", "u".repeat(url_length));
        store.add_endpoints(USER, group, vec![endpoint(&url, None)], 1, ROOMY).await.unwrap();
    }
    store.add_endpoints(OTHER, "x", vec![endpoint("http://127.0.0.1:1/", None)], 1, ROOMY).await.unwrap();
    let names = |page: &Page<UrlGroup>| page.items.iter().map(|group| group.name.clone()).collect::<Vec<_>>();
    let list = |request: PageRequest| {
        let store = &store;
        async move { store.list_groups(USER, &request).await.unwrap() }
    };
    // By count, by name, with a cursor that continues.
    let first = list(page(2)).await;
    assert_eq!((names(&first), first.cursor.as_deref()), (vec!["a".to_string(), "b".into()], Some("b")));
    let rest = list(PageRequest { cursor: first.cursor.clone(), ..page(2) }).await;
    assert_eq!((names(&rest), rest.cursor), (vec!["c".to_string(), "d".into()], None));
    // By size: a page ends before the group that does not fit, and holds at least one.
    let small = PageRequest { max_bytes: 1_000, ..page(10) };
    let first = list(small.clone()).await;
    assert_eq!((names(&first), first.cursor.as_deref()), (vec!["a".to_string()], Some("a")));
    assert!(first.next_item_bytes.is_some_and(|bytes| bytes > 5_000), "{:?}", first.next_item_bytes);
    let big = list(PageRequest { cursor: first.cursor.clone(), ..small.clone() }).await;
    assert_eq!(names(&big), ["b"], "a group larger than the page comes alone");
    // Unless the first must fit too: then the page says what the group needs.
    let strict = list(PageRequest { cursor: first.cursor, fit_first: true, ..small }).await;
    assert!(strict.items.is_empty());
    assert!(strict.next_item_bytes.is_some_and(|bytes| bytes > 5_000));
    store.shutdown().await.unwrap();
}
