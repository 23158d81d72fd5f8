//! `Config::app_dir` / `--app-dir`: a built web app served at `/app/`, with `index.html` for
//! client-side routes; nothing at `/app/` without it. The binary refuses to start when the
//! directory has no `index.html`, rather than answering 404 for every page.

mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;

use support::{assert_error, TestServer};
use tidings::{MemoryStore, Retention};

const INDEX: &str =
    "<!doctype html><title>app</title><script type=module src=\"/app/assets/app.js\"></script>";
const SCRIPT: &str = "console.log('tidings app');\n";
const STYLE: &str = "body { margin: 0 }\n";

/// A temp dir laid out like a Vite build: `index.html` and `assets/`.
fn built_app() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), INDEX).unwrap();
    std::fs::create_dir(dir.path().join("assets")).unwrap();
    std::fs::write(dir.path().join("assets/app.js"), SCRIPT).unwrap();
    std::fs::write(dir.path().join("assets/style.css"), STYLE).unwrap();
    dir
}

fn memory() -> Arc<MemoryStore> {
    Arc::new(MemoryStore::new(Retention::default()))
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// GET: status, content type, body.
async fn get(url: &str) -> (u16, String, String) {
    let r = client().get(url).send().await.unwrap();
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, content_type, r.text().await.unwrap())
}

#[tokio::test]
async fn serves_the_app_its_assets_and_index_for_client_routes() {
    let app = built_app();
    let server = TestServer::start(memory(), |c| c.app_dir(app.path())).await;

    let (status, ct, body) = get(&server.url("/app/")).await;
    assert_eq!((status, body.as_str()), (200, INDEX));
    assert!(ct.starts_with("text/html"), "{ct}");

    let (status, ct, body) = get(&server.url("/app/index.html")).await;
    assert_eq!((status, body.as_str()), (200, INDEX));
    assert!(ct.starts_with("text/html"), "{ct}");

    let (status, ct, body) = get(&server.url("/app/assets/app.js")).await;
    assert_eq!((status, body.as_str()), (200, SCRIPT));
    assert!(ct.contains("javascript"), "{ct}");

    let (status, ct, body) = get(&server.url("/app/assets/style.css")).await;
    assert_eq!((status, body.as_str()), (200, STYLE));
    assert!(ct.starts_with("text/css"), "{ct}");

    // A client-side route (or a query, as the demo's ?room=) loads the app.
    // A directory too: never a redirect to the prefix-stripped path.
    for path in [
        "/app/rooms/42",
        "/app/?room=room:7",
        "/app/assets/missing.js",
        "/app/assets",
        "/app/assets/",
    ] {
        let (status, ct, body) = get(&server.url(path)).await;
        assert_eq!((status, body.as_str()), (200, INDEX), "{path}");
        assert!(ct.starts_with("text/html"), "{path}: {ct}");
    }

    // Without the slash, a redirect (relative, so it also works nested under a prefix), so that
    // relative asset URLs resolve under /app/.
    let r = client().get(server.url("/app")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 308);
    assert_eq!(r.headers()["location"], "app/");
    let r = reqwest::get(server.url("/app?room=room:2")).await.unwrap();
    assert_eq!((r.url().path(), r.url().query()), ("/app/", Some("room=room:2")));
    assert_eq!(r.text().await.unwrap(), INDEX);

    // Reading only, and the error is JSON like every other.
    let r = client().post(server.url("/app/")).send().await.unwrap();
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_error(
        status,
        &body,
        405,
        "method_not_allowed",
        &["POST", "/app/", "GET"],
    );

    // Nothing outside the directory: `tests/security.rs` checks that with a sentinel file beside
    // the app directory (this one has nothing beside it to find).

    // The API is unchanged.
    let (status, _, _) = get(&server.url("/health")).await;
    assert_eq!(status, 200);
    let (status, ct, body) = get(&server.url("/")).await;
    assert_eq!(status, 200);
    assert!(
        ct.starts_with("text/html") && body != INDEX,
        "/ stays the built-in demo page"
    );
}

#[tokio::test]
async fn without_app_dir_app_is_an_unknown_route() {
    let server = TestServer::start(memory(), |c| c).await;
    for path in ["/app", "/app/", "/app/index.html"] {
        let r = client().get(server.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap();
        assert_error(status, &body, 404, "not_found", &["/emit"]);
    }
}

#[test]
fn the_binary_refuses_an_app_dir_without_index_html() {
    let empty = tempfile::tempdir().unwrap();
    for dir in [empty.path().to_path_buf(), empty.path().join("missing")] {
        let out = Command::new(support::tidings_bin())
            .arg("--bind")
            .arg("127.0.0.1:0")
            .arg("--schema")
            .arg(support::schema_path())
            .arg("--app-dir")
            .arg(&dir)
            .env_clear()
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "must not start with {}", dir.display());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--app-dir")
                && stderr.contains("index.html")
                && stderr.contains(&*dir.to_string_lossy()),
            "{stderr}"
        );
    }
}
