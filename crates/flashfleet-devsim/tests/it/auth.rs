//! Logging in: password and Ed25519 key, as the upgrader does.

use crate::support::{Login, blocking, connect, device, exec, fleet};

#[tokio::test]
async fn devices_accept_the_password_and_the_key() {
    let fleet = fleet(vec![device()]).await;
    let address = fleet.device(0).address();
    let credentials = fleet.credentials().clone();
    let answers = blocking(move || {
        [Login::Password, Login::Key].map(|login| {
            let session = connect(address, &credentials, login).expect("login works");
            exec(&session, "uci get openwisp.http.uuid")
        })
    })
    .await;
    for answer in answers {
        assert_eq!(answer.stdout, format!("{}\n", fleet.device(0).uuid()));
        assert_eq!(answer.exit_status, 0);
    }
    fleet.shutdown().await;
}

#[tokio::test]
async fn devices_refuse_a_wrong_password_and_an_unknown_key() {
    let fleet = fleet(vec![device()]).await;
    let address = fleet.device(0).address();
    let mut wrong_password = fleet.credentials().clone();
    wrong_password.password = "admin".to_owned();
    let other_key = flashfleet_devsim::ClientCredentials::generate();
    let results = blocking(move || {
        (
            connect(address, &wrong_password, Login::Password).err(),
            connect(address, &other_key, Login::Key).err(),
        )
    })
    .await;
    assert!(results.0.is_some(), "a wrong password must be refused");
    assert!(results.1.is_some(), "an unknown key must be refused");
    fleet.shutdown().await;
}
