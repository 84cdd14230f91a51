//! What generic gRPC clients see from the wire alone: health and reflection.

use chaff::proto::Label;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use crate::common::*;

async fn channel(server: &TestServer) -> Channel {
    Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn health_reports_serving() {
    let server = TestServer::start().await;
    let mut h = HealthClient::new(channel(&server).await);
    for service in ["", "chaff.v1.Chaff"] {
        let r = h
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            ServingStatus::Serving as i32,
            "service {service:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn reflection_lists_chaff_and_health() {
    let server = TestServer::start().await;
    let mut r = ServerReflectionClient::new(channel(&server).await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = r
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected response {resp:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"chaff.v1.Chaff".to_string()), "{names:?}");
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );
    server.stop().await;
}

on_both_stores!(
    Redis,
    concurrent_clicks_for_one_user_are_all_counted,
    async |on| {
        let server = on.start().await;
        let c = server.client().await;
        let alice = server.u("alice");
        let mut tasks = Vec::new();
        for i in 0..40 {
            let mut c = c.clone();
            tasks.push(tokio::spawn(async move {
                let label = if i % 2 == 0 { Label::Spam } else { Label::Ham };
                let msg = format!("Subject: note {i}\r\n\r\nbody word{i}\r\n");
                train(&mut c, alice, msg.as_bytes(), label, &format!("m{i}")).await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut c = c;
        let u = user(&mut c, alice).await;
        assert_eq!((u.spam_learned, u.ham_learned), (20, 20));
        server.stop().await;
    }
);
