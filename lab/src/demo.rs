//! The README's demo: placeholder until written below.
use anyhow::Result;

pub async fn run() -> Result<()> {
    anyhow::bail!("the demo is not written yet")
}
