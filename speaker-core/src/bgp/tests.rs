use super::*;

/// A node of a 4-byte AS peering with AS 64500 over both families (the wire tests use it too).
pub(crate) fn config() -> PeerConfig {
    PeerConfig {
        local_asn: 4_200_000_001,
        peer_asn: 64500,
        router_id: Ipv4Addr::new(198, 51, 100, 11),
        hold_time: Duration::from_secs(90),
        keepalive_time: None,
        connect_retry: Duration::from_secs(5),
        families: Families {
            ipv4: true,
            ipv6: true,
        },
    }
}

fn open() -> Open {
    Open {
        version: 4,
        asn: 64500,
        hold_time: 180,
        router_id: Ipv4Addr::new(198, 51, 100, 1),
        four_octet_asn: true,
        families: Families {
            ipv4: true,
            ipv6: false,
        },
    }
}

const S: Duration = Duration::from_secs(1);

/// A session taken to Established at `now`.
fn established(now: Instant) -> Session {
    let mut s = Session::new(config());
    assert_eq!(s.handle(Input::Start, now), [Output::Connect]);
    assert_eq!(s.handle(Input::TcpConnected, now), [Output::SendOpen]);
    assert_eq!(s.handle(Input::Open(open()), now), [Output::SendKeepalive]);
    let out = s.handle(Input::Keepalive, now);
    assert!(matches!(out[..], [Output::Established(_)]), "{out:?}");
    s
}

#[test]
fn a_session_comes_up_with_what_both_ends_agreed() {
    let now = Instant::now();
    let s = established(now);
    assert_eq!(s.state(), State::Established);
    assert_eq!(
        s.negotiated().copied(),
        Some(Negotiated {
            // The smaller hold time, a third of it between keepalives.
            hold_time: 90 * S,
            keepalive_time: Some(30 * S),
            // Only the families both offered.
            families: Families {
                ipv4: true,
                ipv6: false
            },
            four_octet_asn: true,
            peer_router_id: Ipv4Addr::new(198, 51, 100, 1),
        })
    );
    assert_eq!(s.next_deadline(), Some(now + 30 * S));
}

#[test]
fn keepalives_go_out_and_silence_ends_the_session_at_the_hold_time() {
    let t0 = Instant::now();
    let mut s = established(t0);
    assert_eq!(s.expire(t0 + 29 * S), []);
    assert_eq!(s.expire(t0 + 30 * S), [Output::SendKeepalive]);
    assert_eq!(s.next_deadline(), Some(t0 + 60 * S));
    // An UPDATE counts as hearing from the router, as a KEEPALIVE does.
    assert_eq!(s.handle(Input::Update, t0 + 50 * S), []);
    assert_eq!(s.expire(t0 + 60 * S), [Output::SendKeepalive]);
    assert_eq!(s.expire(t0 + 139 * S), [Output::SendKeepalive]);
    assert_eq!(
        s.expire(t0 + 140 * S),
        [
            Output::SendNotification(Notification::HOLD_TIMER_EXPIRED),
            Output::Close,
            Output::Down(Down::HoldTimerExpired(90 * S)),
        ]
    );
    assert_eq!(s.state(), State::Idle);
    // It connects again after the connect-retry time.
    assert_eq!(s.next_deadline(), Some(t0 + 145 * S));
    assert_eq!(s.expire(t0 + 145 * S), [Output::Connect]);
    assert_eq!(s.state(), State::Connect);
}

#[test]
fn a_hold_time_of_zero_means_no_keepalives_and_no_hold_timer() {
    let now = Instant::now();
    let mut s = Session::new(PeerConfig {
        hold_time: Duration::ZERO,
        ..config()
    });
    s.handle(Input::Start, now);
    s.handle(Input::TcpConnected, now);
    s.handle(Input::Open(open()), now);
    s.handle(Input::Keepalive, now);
    assert_eq!(s.state(), State::Established);
    assert_eq!(s.negotiated().unwrap().keepalive_time, None);
    assert_eq!(s.next_deadline(), None);
    assert_eq!(s.expire(now + 100_000 * S), []);
}

#[test]
fn a_configured_keepalive_is_kept_unless_it_exceeds_a_third_of_the_hold_time() {
    let now = Instant::now();
    for (keepalive, expected) in [(10, 10), (60, 30)] {
        let mut s = Session::new(PeerConfig {
            keepalive_time: Some(keepalive * S),
            ..config()
        });
        s.handle(Input::Start, now);
        s.handle(Input::TcpConnected, now);
        s.handle(Input::Open(open()), now);
        assert_eq!(s.negotiated().unwrap().keepalive_time, Some(expected * S));
    }
}

#[test]
fn a_bad_open_is_answered_with_the_notification_rfc_4271_names() {
    let now = Instant::now();
    let cases = [
        (
            Open {
                version: 3,
                ..open()
            },
            Notification::UNSUPPORTED_VERSION,
        ),
        (
            Open {
                asn: 64501,
                ..open()
            },
            Notification::BAD_PEER_AS,
        ),
        (
            Open {
                hold_time: 2,
                ..open()
            },
            Notification::UNACCEPTABLE_HOLD_TIME,
        ),
        (
            Open {
                router_id: Ipv4Addr::UNSPECIFIED,
                ..open()
            },
            Notification::BAD_BGP_IDENTIFIER,
        ),
        // Our ASN needs 4 bytes; a peer that cannot read them is refused.
        (
            Open {
                four_octet_asn: false,
                ..open()
            },
            Notification::UNSUPPORTED_CAPABILITY,
        ),
        (
            Open {
                families: Families {
                    ipv4: false,
                    ipv6: false,
                },
                ..open()
            },
            Notification::UNSUPPORTED_CAPABILITY,
        ),
    ];
    for (bad, notification) in cases {
        let mut s = Session::new(config());
        s.handle(Input::Start, now);
        s.handle(Input::TcpConnected, now);
        assert_eq!(
            s.handle(Input::Open(bad.clone()), now),
            [
                Output::SendNotification(notification),
                Output::Close,
                Output::Down(Down::SentNotification(notification)),
            ],
            "{bad:?}"
        );
        assert_eq!(s.state(), State::Idle);
    }
    // iBGP: the router may not have our identifier.
    let mut s = Session::new(PeerConfig {
        local_asn: 64500,
        ..config()
    });
    s.handle(Input::Start, now);
    s.handle(Input::TcpConnected, now);
    let same_id = Open {
        router_id: config().router_id,
        ..open()
    };
    assert_eq!(
        s.handle(Input::Open(same_id), now)[0],
        Output::SendNotification(Notification::BAD_BGP_IDENTIFIER)
    );
}

#[test]
fn a_refused_connection_is_retried_after_the_connect_retry_time() {
    let t0 = Instant::now();
    let mut s = Session::new(config());
    s.handle(Input::Start, t0);
    assert_eq!(
        s.handle(Input::TcpClosed, t0 + S),
        [Output::Close, Output::Down(Down::ConnectionFailed)]
    );
    assert_eq!(s.state(), State::Active);
    assert_eq!(s.expire(t0 + 4 * S), []);
    assert_eq!(s.expire(t0 + 5 * S), [Output::Connect]);
    assert_eq!(s.state(), State::Connect);
    assert_eq!(
        s.handle(Input::TcpConnected, t0 + 6 * S),
        [Output::SendOpen]
    );
    // The OPEN is waited for 4 minutes.
    assert_eq!(s.next_deadline(), Some(t0 + 6 * S + OPEN_HOLD));
}

#[test]
fn bfd_down_takes_an_established_session_down_at_once() {
    let now = Instant::now();
    let mut s = established(now);
    assert_eq!(
        s.handle(Input::BfdDown, now + S),
        [
            Output::SendNotification(Notification::BFD_DOWN),
            Output::Close,
            Output::Down(Down::BfdDown),
        ]
    );
    assert_eq!(s.state(), State::Idle);
    // Before OpenConfirm there is nothing for BFD to take down.
    let mut s = Session::new(config());
    s.handle(Input::Start, now);
    assert_eq!(s.handle(Input::BfdDown, now), []);
    assert_eq!(s.state(), State::Connect);
}

#[test]
fn a_stop_says_why_and_stays_stopped() {
    let now = Instant::now();
    let mut s = established(now);
    assert_eq!(
        s.handle(Input::Stop, now),
        [
            Output::SendNotification(Notification::ADMIN_SHUTDOWN),
            Output::Close,
            Output::Down(Down::Stopped),
        ]
    );
    assert_eq!(s.next_deadline(), None);
    assert_eq!(s.expire(now + 3600 * S), []);
    assert_eq!(s.handle(Input::Start, now), [Output::Connect]);
}

#[test]
fn a_notification_from_the_router_or_a_message_out_of_turn_ends_the_session() {
    let now = Instant::now();
    let mut s = established(now);
    let cease = Notification::new(6, 4);
    assert_eq!(
        s.handle(Input::Notification(cease), now),
        [Output::Close, Output::Down(Down::PeerNotification(cease))]
    );
    // An UPDATE before the session is up: FSM error, OpenSent's subcode.
    let mut s = Session::new(config());
    s.handle(Input::Start, now);
    s.handle(Input::TcpConnected, now);
    assert_eq!(
        s.handle(Input::Update, now)[0],
        Output::SendNotification(Notification::fsm_error(1))
    );
    // A second OPEN once Established: the Established subcode.
    let mut s = established(now);
    assert_eq!(
        s.handle(Input::Open(open()), now)[0],
        Output::SendNotification(Notification::fsm_error(3))
    );
    // What the caller could not decode is answered with the caller's Notification.
    let mut s = established(now);
    let malformed = Notification::new(3, 1);
    assert_eq!(
        s.handle(Input::Malformed(malformed), now),
        [
            Output::SendNotification(malformed),
            Output::Close,
            Output::Down(Down::SentNotification(malformed)),
        ]
    );
}

#[test]
fn reasons_read_as_sentences() {
    assert_eq!(
        Down::PeerNotification(Notification::new(2, 2)).to_string(),
        "the router sent NOTIFICATION OPEN Message Error / Bad Peer AS (2/2)"
    );
    assert_eq!(
        Down::HoldTimerExpired(90 * S).to_string(),
        "no message from the router within the hold time (90 s)"
    );
    assert_eq!(describe(Notification::new(6, 99)), "Cease / subcode 99");
    assert_eq!(describe(Notification::new(4, 0)), "Hold Timer Expired");
    assert_eq!(describe(Notification::new(42, 1)), "code 42 subcode 1");
}
