//! Named real models: what `scripts/fetch-model.sh NAME` puts in the model cache. Nothing here
//! downloads: a named model that is not in the cache is an error that says how to fetch it.
//! Shared by the `arf` command line and the services' benches.

use std::path::PathBuf;

/// (name, file under `<cache>/<name>/`, what it is).
const KNOWN: [(&str, &str, &str); 1] = [(
    "smollm2",
    "SmolLM2-135M-Instruct.Q4_1.gguf",
    "SmolLM2-135M-Instruct (Llama architecture), Q4_1 GGUF",
)];

/// `$ARF_MODEL_CACHE`, or `~/.cache/arf/models` (the fetch script's default).
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("ARF_MODEL_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/arf/models")
        }
    }
}

/// A known name's cached file, or the argument itself as a path.
pub fn resolve(name_or_path: &str) -> anyhow::Result<PathBuf> {
    let Some((name, file, what)) = KNOWN.iter().find(|(n, ..)| *n == name_or_path) else {
        let path = PathBuf::from(name_or_path);
        anyhow::ensure!(
            path.exists(),
            "{name_or_path} is neither a known model name ({}) nor an existing path",
            KNOWN.map(|k| k.0).join(", ")
        );
        return Ok(path);
    };
    let path = cache_dir().join(name).join(file);
    anyhow::ensure!(
        path.is_file(),
        "{what} is not in the model cache ({}). Fetch it once with `scripts/fetch-model.sh {name}`: \
         nothing downloads at run time.",
        path.display()
    );
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_named_model_says_how_to_fetch_it() {
        // SAFETY: this test alone reads or writes ARF_MODEL_CACHE in this test binary.
        unsafe { std::env::set_var("ARF_MODEL_CACHE", "/nonexistent/arf-models") };
        let err = resolve("smollm2").unwrap_err().to_string();
        assert!(err.contains("scripts/fetch-model.sh smollm2"), "{err}");
        assert!(
            resolve("no-such-model")
                .unwrap_err()
                .to_string()
                .contains("neither a known model")
        );
        // A path that exists when the test runs (a test binary reused from a target directory
        // that another checkout built would carry that checkout's CARGO_MANIFEST_DIR).
        let here = std::env::temp_dir();
        assert_eq!(resolve(here.to_str().unwrap()).unwrap(), here);
    }
}
