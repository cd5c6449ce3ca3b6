//! The lab against the real components. Needs root and FERROLB_LAB=1 (the README's test command).

use lab::{Lab, LabConfig};

macro_rules! require_lab {
    () => {
        if !lab::lab_tests_enabled() {
            eprintln!(
                "skipped: lab tests run with FERROLB_LAB=1 as root (the README's test command)"
            );
            return;
        }
    };
}

#[tokio::test]
async fn smoke() {
    require_lab!();
    let lab = Lab::start(LabConfig::default()).await.unwrap();
    let out = lab.kubectl(&["get", "nodes", "-o", "wide"]).await.unwrap();
    println!("{out}");
    println!("{}", lab.kubectl(&["version"]).await.unwrap());
}
