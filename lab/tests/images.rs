//! The lab's ferrolb image against the Dockerfile: the lab runs its kubelets' pods from an
//! image built without Docker (lab/scripts/build-image.sh), which must be the Dockerfile's in
//! every way a pod sees. Needs root and buildah; runs with FERROLB_LAB=1 like the other lab
//! tests.

use std::path::{Path, PathBuf};

use lab::binaries::FerrolbBinaries;
use lab::images::OciImage;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// What the Dockerfile's final stage gives the image it builds.
#[derive(Debug, Default)]
struct FinalStage {
    /// Where its COPY instructions put files.
    copied: Vec<String>,
    user: Option<String>,
    entrypoint: Vec<String>,
}

/// Reads the instructions after the last FROM (continuation lines joined, comments skipped).
fn final_stage(dockerfile: &str) -> FinalStage {
    let joined = dockerfile
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    let mut stage = FinalStage::default();
    for line in joined.lines() {
        let (instruction, rest) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
        match instruction.to_ascii_uppercase().as_str() {
            "FROM" => stage = FinalStage::default(),
            "COPY" => {
                let args: Vec<&str> = rest
                    .split_whitespace()
                    .filter(|a| !a.starts_with("--"))
                    .collect();
                let (dest, sources) = args.split_last().expect("COPY has a destination");
                for source in sources {
                    stage.copied.push(if dest.ends_with('/') {
                        let file = source.rsplit('/').next().unwrap();
                        format!("{dest}{file}")
                    } else {
                        dest.to_string()
                    });
                }
            }
            "USER" => stage.user = Some(rest.trim().to_string()),
            "ENTRYPOINT" => {
                stage.entrypoint =
                    serde_json::from_str(rest.trim()).expect("ENTRYPOINT in its exec (JSON) form")
            }
            _ => {}
        }
    }
    stage
}

#[test]
fn the_final_stage_is_read_as_docker_reads_it() {
    let stage = final_stage(
        "FROM a AS build\nCOPY . .\nUSER 1\n# FROM ignored\nFROM b\nCOPY --from=build /x \\\n /y /\n\
         COPY /z /bin/zz\nUSER 65534:65534\nENTRYPOINT [\"/x\", \"--flag\"]\n",
    );
    assert_eq!(stage.copied, ["/x", "/y", "/bin/zz"]);
    assert_eq!(stage.user.as_deref(), Some("65534:65534"));
    assert_eq!(stage.entrypoint, ["/x", "--flag"]);
}

/// Whether `path` is one of the shared libraries (or the loader) the image carries beside the
/// binaries, as distroless/cc carries glibc and libgcc.
fn is_library(path: &str) -> bool {
    let file = path.rsplit('/').next().unwrap_or_default();
    file.starts_with("ld-linux") || file.starts_with("lib") && file.contains(".so")
}

#[test]
#[ignore = "lab test: needs root and buildah; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
fn the_lab_ferrolb_image_is_the_dockerfiles_final_stage() {
    lab::require_lab!();
    let archive = FerrolbBinaries::find().unwrap().image().unwrap();
    let image = OciImage::read(&archive).unwrap();
    let stage = final_stage(&std::fs::read_to_string(repo("Dockerfile")).unwrap());

    assert_eq!(image.user, stage.user, "USER");
    assert_eq!(image.entrypoint, stage.entrypoint, "ENTRYPOINT");
    // The same binaries at the same paths; besides them only directories and libraries.
    let mut binaries: Vec<&String> = image
        .files
        .iter()
        .filter(|f| !is_library(f) && !image.files.iter().any(|g| g.starts_with(&format!("{f}/"))))
        .collect();
    binaries.sort();
    let mut copied: Vec<&String> = stage.copied.iter().collect();
    copied.sort();
    assert_eq!(binaries, copied, "the binaries' paths");
    for lib in ["libc.so.6", "libgcc_s.so.1"] {
        assert!(
            image.files.iter().any(|f| f.ends_with(&format!("/{lib}"))),
            "no {lib} in {:?}",
            image.files
        );
    }
    // Under the name deploy/ gives it, as containerd spells it.
    let manifest = std::fs::read_to_string(repo("deploy/base/speaker.yaml")).unwrap();
    let deployed = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("image: "))
        .expect("an image in the speaker's manifest");
    assert_eq!(image.name, format!("docker.io/{deployed}"));
}
