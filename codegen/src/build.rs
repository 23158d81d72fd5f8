//! Writing generated code where an app keeps it: from a build script, or from the `tidings
//! codegen` command.

use std::path::{Path, PathBuf};

#[cfg(feature = "rust")]
use crate::rust::{rust, CodegenError, RustOptions};
use crate::schema::{SchemaError, SchemaFile};
use crate::typescript::typescript_files;

/// Why a [`Build`] failed. Displays as one line that names the file concerned, so a build script
/// or a command that prints it says what is wrong without a backtrace.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The schema could not be read or was rejected.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// Rust code could not be generated.
    #[cfg(feature = "rust")]
    #[error(transparent)]
    Codegen(#[from] CodegenError),
    /// An environment variable that cargo sets for build scripts is missing.
    #[error(
        "environment variable {0} is not set; call Build::run from a build script, or set a \
         directory with Build::in_dir"
    )]
    Env(&'static str),
    /// A generated file could not be written (or, with [`Build::check`], read).
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// What [`Build::run`] found or did for one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileState {
    /// On disk and current; not touched.
    Unchanged,
    /// Written (new or changed).
    Written,
    /// With [`Build::check`]: on disk but different from what the schema generates.
    Stale,
    /// With [`Build::check`]: not on disk.
    Missing,
}

/// What [`Build::run`] did: every generated file with its state, in a fixed order (Rust first,
/// then the TypeScript folder's files).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Report {
    /// The files, as paths resolved against the build's directory.
    pub files: Vec<(PathBuf, FileState)>,
}

impl Report {
    /// The files that are stale or missing (only [`Build::check`] reports such files).
    pub fn outdated(&self) -> impl Iterator<Item = &Path> {
        self.files
            .iter()
            .filter(|(_, s)| matches!(s, FileState::Stale | FileState::Missing))
            .map(|(p, _)| p.as_path())
    }

    /// Whether every file was current (nothing written, nothing stale or missing).
    pub fn is_current(&self) -> bool {
        self.files.iter().all(|(_, s)| *s == FileState::Unchanged)
    }
}

#[derive(Debug, Clone)]
enum Base {
    /// In a build script: the schema and TypeScript paths are relative to
    /// `CARGO_MANIFEST_DIR`, the Rust file to `OUT_DIR`, and cargo is told what to watch.
    BuildScript,
    /// Everything relative to this directory; nothing printed.
    Dir(PathBuf),
}

/// Generates an app's code from its schema: Rust types (a file, usually in `OUT_DIR`) and the
/// TypeScript folder ([`typescript_files`](crate::typescript_files())) in the app's own tree.
///
/// Files are written only when their contents change, so a dev server (Vite, `tsc --watch`)
/// watching the TypeScript folder does not rebuild on every `cargo build`, and the Rust file's
/// dependents are not recompiled.
///
/// # In a build script
///
/// ```no_run
/// // build.rs
/// # #[cfg(feature = "rust")]
/// fn main() {
///     // Reads <crate>/schema/events.json; writes $OUT_DIR/events.rs and web/src/tidings/*.ts.
///     let build = tidings_codegen::Build::new("schema/events.json")
///         .rust("events.rs")
///         .typescript("web/src/tidings");
///     if let Err(e) = build.run() {
///         // One line naming the file, the event and the problem; no backtrace.
///         eprintln!("error: {e}");
///         std::process::exit(1);
///     }
/// }
/// # #[cfg(not(feature = "rust"))]
/// # fn main() {}
/// ```
///
/// In a build script, relative paths of the schema and the TypeScript folder are resolved against
/// the crate's directory (`CARGO_MANIFEST_DIR`) and the Rust file against `OUT_DIR`; `run` prints
/// `cargo:rerun-if-changed` for the schema (also when it is rejected, so fixing it reruns the
/// script) and for the TypeScript folder (so a generated file edited by hand is put back).
///
/// # Elsewhere
///
/// [`Build::in_dir`] resolves every relative path against a directory instead and prints
/// nothing; [`Build::check`] compares instead of writing (the `tidings codegen --check` command
/// is this):
///
/// ```
/// # let dir = tempfile_dir();
/// # std::fs::create_dir_all(dir.join("schema")).unwrap();
/// # std::fs::write(dir.join("schema/events.json"),
/// #     r#"{ "namespaces": { "order": { "shipped": { "type": "string" } } } }"#).unwrap();
/// use tidings_codegen::{Build, FileState};
///
/// let build = Build::new("schema/events.json").typescript("web/src/tidings").in_dir(&dir);
/// let report = build.clone().check(true).run()?;
/// assert_eq!(report.outdated().count(), 4); // nothing generated yet
/// assert!(build.clone().run()?.files.iter().all(|(_, s)| *s == FileState::Written));
/// assert!(build.check(true).run()?.is_current());
/// # fn tempfile_dir() -> std::path::PathBuf {
/// #     let d = std::env::temp_dir().join(format!("tidings-codegen-doc-{}", std::process::id()));
/// #     let _ = std::fs::remove_dir_all(&d);
/// #     d
/// # }
/// # Ok::<(), tidings_codegen::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a Build does nothing until run() is called"]
pub struct Build {
    schema: PathBuf,
    #[cfg(feature = "rust")]
    rust: Option<(PathBuf, RustOptions)>,
    typescript: Option<PathBuf>,
    base: Base,
    check: bool,
}

impl Build {
    /// A build of the schema at `schema` that generates nothing yet: add [`rust`](Self::rust)
    /// and/or [`typescript`](Self::typescript).
    pub fn new(schema: impl Into<PathBuf>) -> Self {
        Build {
            schema: schema.into(),
            #[cfg(feature = "rust")]
            rust: None,
            typescript: None,
            base: Base::BuildScript,
            check: false,
        }
    }

    /// Generates the Rust types into `file` (relative to `OUT_DIR` in a build script), for
    /// `include!`. The code implements the traits of `::tidings`; see
    /// [`tidings_crate`](Self::tidings_crate).
    #[cfg(feature = "rust")]
    pub fn rust(mut self, file: impl Into<PathBuf>) -> Self {
        let opts = self.rust.take().map(|(_, o)| o).unwrap_or_default();
        self.rust = Some((file.into(), opts));
        self
    }

    /// The path of the `tidings` crate in the generated Rust (default `::tidings`): set it when
    /// the dependency is renamed.
    #[cfg(feature = "rust")]
    pub fn tidings_crate(mut self, path: impl Into<String>) -> Self {
        let (file, opts) = self
            .rust
            .take()
            .unwrap_or_else(|| (PathBuf::from("events.rs"), RustOptions::default()));
        self.rust = Some((file, opts.tidings_crate(path)));
        self
    }

    /// Generates the TypeScript folder `dir` (`events.ts`, `index.ts`, `react.ts`, `svelte.ts`),
    /// created when missing. Files of other names in it are left alone.
    pub fn typescript(mut self, dir: impl Into<PathBuf>) -> Self {
        self.typescript = Some(dir.into());
        self
    }

    /// Resolves relative paths against `dir` rather than cargo's build-script directories, and
    /// prints nothing for cargo.
    pub fn in_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base = Base::Dir(dir.into());
        self
    }

    /// `true`: write nothing, and report files that differ from what the schema generates as
    /// [`FileState::Stale`] or [`FileState::Missing`].
    pub fn check(mut self, check: bool) -> Self {
        self.check = check;
        self
    }

    /// Generates and writes (or, with [`check`](Self::check), compares) the files.
    ///
    /// # Errors
    ///
    /// [`Error::Schema`] when the schema cannot be read or is invalid, [`Error::Codegen`] when
    /// typify cannot handle it, [`Error::Env`] in a build-script build outside a build script,
    /// [`Error::Write`] when a file cannot be written or read.
    pub fn run(self) -> Result<Report, Error> {
        let (root, out_dir) = match &self.base {
            Base::BuildScript => {
                println!("cargo:rerun-if-changed={}", self.schema.display());
                let manifest =
                    std::env::var_os("CARGO_MANIFEST_DIR").ok_or(Error::Env("CARGO_MANIFEST_DIR"))?;
                let out = std::env::var_os("OUT_DIR").map(PathBuf::from);
                (PathBuf::from(manifest), out)
            }
            Base::Dir(dir) => (dir.clone(), Some(dir.clone())),
        };
        // Generated files name the schema as the user wrote it, so a build script and the
        // command, run from the crate's directory, write the same bytes.
        let origin = self.schema.to_string_lossy().replace('\\', "/");
        let path = root.join(&self.schema);
        let text = std::fs::read_to_string(&path).map_err(|source| SchemaError::Read {
            origin: origin.clone(),
            source,
        })?;
        let schema = SchemaFile::parse(&text, &origin)?;

        let mut outputs: Vec<(PathBuf, String)> = Vec::new();
        #[cfg(feature = "rust")]
        if let Some((file, opts)) = &self.rust {
            let dir = out_dir.ok_or(Error::Env("OUT_DIR"))?;
            outputs.push((dir.join(file), rust(&schema, opts)?));
        }
        #[cfg(not(feature = "rust"))]
        let _ = out_dir;
        if let Some(dir) = &self.typescript {
            let dir = root.join(dir);
            if matches!(self.base, Base::BuildScript) {
                println!("cargo:rerun-if-changed={}", dir.display());
            }
            for file in typescript_files(&schema) {
                outputs.push((dir.join(file.name), file.contents));
            }
        }

        let mut report = Report::default();
        for (path, contents) in outputs {
            let state = if self.check {
                compare(&path, &contents)?
            } else {
                write_if_changed(&path, &contents)?
            };
            report.files.push((path, state));
        }
        Ok(report)
    }
}

fn compare(path: &Path, contents: &str) -> Result<FileState, Error> {
    match std::fs::read(path) {
        Ok(existing) if existing == contents.as_bytes() => Ok(FileState::Unchanged),
        Ok(_) => Ok(FileState::Stale),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileState::Missing),
        Err(source) => Err(Error::Write {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn write_if_changed(path: &Path, contents: &str) -> Result<FileState, Error> {
    if compare(path, contents)? == FileState::Unchanged {
        return Ok(FileState::Unchanged);
    }
    let io = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(path, contents).map_err(io)?;
    Ok(FileState::Written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tidings-build-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("schema")).unwrap();
        std::fs::write(
            dir.join("schema/events.json"),
            r#"{ "namespaces": { "order": { "shipped": { "type": "string" } } } }"#,
        )
        .unwrap();
        dir
    }

    #[test]
    fn writes_only_what_changed_and_check_sees_edits() {
        let dir = scratch("edits");
        let build = Build::new("schema/events.json")
            .typescript("web/tidings")
            .in_dir(&dir);
        let first = build.clone().run().unwrap();
        assert_eq!(first.files.len(), 4);
        assert!(first.files.iter().all(|(_, s)| *s == FileState::Written));

        let events = dir.join("web/tidings/events.ts");
        let before = std::fs::metadata(&events).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(build.clone().run().unwrap().is_current());
        assert_eq!(std::fs::metadata(&events).unwrap().modified().unwrap(), before);

        std::fs::write(&events, "// edited\n").unwrap();
        std::fs::remove_file(dir.join("web/tidings/svelte.ts")).unwrap();
        let checked = build.clone().check(true).run().unwrap();
        let states: Vec<FileState> = checked.files.iter().map(|(_, s)| *s).collect();
        assert_eq!(
            states,
            [
                FileState::Stale,
                FileState::Unchanged,
                FileState::Unchanged,
                FileState::Missing
            ]
        );
        // check wrote nothing
        assert_eq!(std::fs::read_to_string(&events).unwrap(), "// edited\n");

        let again = build.run().unwrap();
        assert_eq!(again.files[0].1, FileState::Written);
        assert_eq!(again.files[3].1, FileState::Written);
        assert!(std::fs::read_to_string(&events)
            .unwrap()
            .starts_with("// Generated by tidings-codegen from schema/events.json. Do not edit.\n"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bad_schema_names_the_file() {
        let dir = scratch("bad");
        std::fs::write(dir.join("schema/events.json"), "{ \"namespaces\": 1 }").unwrap();
        let e = Build::new("schema/events.json")
            .typescript("ts")
            .in_dir(&dir)
            .run()
            .unwrap_err();
        assert!(e.to_string().starts_with("schema/events.json: "), "{e}");
        let e = Build::new("schema/nope.json").in_dir(&dir).run().unwrap_err();
        assert!(e.to_string().starts_with("schema/nope.json: "), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(feature = "rust")]
    #[test]
    fn rust_and_typescript_together() {
        let dir = scratch("both");
        let report = Build::new("schema/events.json")
            .rust("gen/events.rs")
            .typescript("ts")
            .in_dir(&dir)
            .run()
            .unwrap();
        let names: Vec<String> = report
            .files
            .iter()
            .map(|(p, _)| p.strip_prefix(&dir).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "gen/events.rs",
                "ts/events.ts",
                "ts/index.ts",
                "ts/react.ts",
                "ts/svelte.ts"
            ]
        );
        let code = std::fs::read_to_string(dir.join("gen/events.rs")).unwrap();
        assert!(code.contains("pub struct OrderShipped"), "{code}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
