//! A test-only fault hook, so that the lab can prove a speaker with a dead or stuck loop fails
//! whole and its addresses move. Inert unless the hidden `--test-fault-file` flag is given:
//! then SIGUSR2 makes the speaker read that file, which names a loop and what happens to it
//! (`membership-panic`, `membership-stall`, `announcer-panic`, `announcer-stall`), and that
//! loop panics or stops making progress at its next turn.

use std::sync::atomic::{AtomicU8, Ordering};

/// The loops a fault can hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loop {
    Membership,
    Announcer,
}

/// What happens to the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Panic,
    Stall,
}

const NONE: u8 = 0;
static ARMED: AtomicU8 = AtomicU8::new(NONE);

fn code(target: Loop, action: Action) -> u8 {
    1 + (target as u8) * 2 + action as u8
}

/// Reads a fault's name as the file holds it.
pub fn parse(text: &str) -> Option<(Loop, Action)> {
    let (target, action) = text.trim().split_once('-')?;
    let target = match target {
        "membership" => Loop::Membership,
        "announcer" => Loop::Announcer,
        _ => return None,
    };
    let action = match action {
        "panic" => Action::Panic,
        "stall" => Action::Stall,
        _ => return None,
    };
    Some((target, action))
}

/// What `target` should suffer now, if a fault was triggered for it.
pub fn due(target: Loop) -> Option<Action> {
    due_when(ARMED.load(Ordering::Relaxed), target)
}

fn due_when(armed: u8, target: Loop) -> Option<Action> {
    [Action::Panic, Action::Stall]
        .into_iter()
        .find(|a| armed != NONE && armed == code(target, *a))
}

/// Listens for SIGUSR2 when given a fault file (tests only); does nothing otherwise.
pub fn install(path: Option<std::path::PathBuf>) {
    let Some(path) = path else {
        return;
    };
    tracing::warn!(path = %path.display(), "test fault hook armed: SIGUSR2 triggers the fault the file names");
    tokio::spawn(async move {
        let Ok(mut signals) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2())
        else {
            return;
        };
        while signals.recv().await.is_some() {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            match parse(&text) {
                Some((target, action)) => {
                    tracing::warn!(?target, ?action, "test fault triggered");
                    ARMED.store(code(target, action), Ordering::Relaxed);
                }
                None => tracing::warn!(text, "unknown test fault"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_read_as_written_and_hit_only_their_loop() {
        assert_eq!(
            parse("membership-stall\n"),
            Some((Loop::Membership, Action::Stall))
        );
        assert_eq!(
            parse("announcer-panic"),
            Some((Loop::Announcer, Action::Panic))
        );
        assert_eq!(parse("speaker-panic"), None);
        assert_eq!(parse("announcer-explode"), None);
        // Not through the process-wide ARMED: an announcer in a test running beside this one
        // would park for good.
        assert_eq!(due_when(NONE, Loop::Membership), None);
        let armed = code(Loop::Announcer, Action::Stall);
        assert_eq!(due_when(armed, Loop::Announcer), Some(Action::Stall));
        assert_eq!(due_when(armed, Loop::Membership), None);
        assert_eq!(due(Loop::Announcer), None, "never armed in the tests");
    }
}
