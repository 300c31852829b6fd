//! Fleets: many devices, each on its own loopback address or port.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use flashfleet_devsim::{Addressing, ClientCredentials, Fleet, FleetConfig, RebootTiming};

use crate::support::{Login, blocking, connect, device, exec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_devices_on_a_loopback_range_all_answer() {
    // A range that other test runs on this machine are unlikely to use at the same time.
    let second_octet = 100 + (std::process::id() % 100) as u8;
    let config = FleetConfig {
        devices: (0..200).map(|_| device()).collect(),
        addressing: Addressing::LoopbackRange {
            first: Ipv4Addr::new(127, second_octet, 0, 1),
            port: 22_022,
        },
        reboot: RebootTiming::default(),
        credentials: ClientCredentials::generate(),
    };
    let started = Instant::now();
    let fleet = Fleet::start(config).await.expect("the fleet starts");
    eprintln!("200 devices started in {:?}", started.elapsed());

    let addresses: Vec<_> = fleet
        .devices()
        .iter()
        .map(|device| device.address())
        .collect();
    assert_eq!(
        addresses[0].ip(),
        IpAddr::V4(Ipv4Addr::new(127, second_octet, 0, 1))
    );
    assert_eq!(
        addresses[199].ip(),
        IpAddr::V4(Ipv4Addr::new(127, second_octet, 0, 200))
    );
    assert!(addresses.iter().all(|address| address.port() == 22_022));

    let started = Instant::now();
    let mut clients = Vec::new();
    for chunk in addresses.chunks(25) {
        let chunk = chunk.to_vec();
        let credentials = fleet.credentials().clone();
        clients.push(blocking(move || {
            chunk
                .into_iter()
                .map(|address| {
                    let session = connect(address, &credentials, Login::Key).expect("login works");
                    exec(&session, "uci get openwisp.http.uuid").stdout
                })
                .collect::<Vec<_>>()
        }));
    }
    let mut printed = Vec::new();
    for client in clients {
        printed.extend(client.await);
    }
    eprintln!("200 logins and commands in {:?}", started.elapsed());
    for (device, stdout) in fleet.devices().iter().zip(printed) {
        assert_eq!(stdout, format!("{}\n", device.uuid()));
    }
    fleet.shutdown().await;
}

#[tokio::test]
async fn devices_on_consecutive_ports_share_one_address() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let base_port = probe.local_addr().expect("an address").port();
    drop(probe);
    let mut config = FleetConfig::on_ephemeral_ports(vec![device(), device(), device()]);
    config.addressing = Addressing::Ports {
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        base_port,
    };
    let Ok(fleet) = Fleet::start(config).await else {
        // Another process took one of the ports in between; nothing to learn here.
        return;
    };
    let ports: Vec<u16> = fleet
        .devices()
        .iter()
        .map(|device| device.address().port())
        .collect();
    assert_eq!(ports, [base_port, base_port + 1, base_port + 2]);
    fleet.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_every_listener_and_session() {
    let fleet = crate::support::fleet(vec![device(), device()]).await;
    let address = fleet.device(1).address();
    let credentials = fleet.credentials().clone();
    let session =
        blocking(move || connect(address, &credentials, Login::Password).expect("login")).await;
    fleet.shutdown().await;
    let refused = blocking(move || {
        let channel = session.channel_session();
        let connect = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1));
        (channel.is_err(), connect.is_err())
    })
    .await;
    assert_eq!(refused, (true, true));
}
