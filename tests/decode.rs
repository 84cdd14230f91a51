//! What malformed or oversized requests get from the wire, and reflection
//! for tools that speak only v1alpha.

use chaff::engine::Settings;
use chaff::proto;
use tonic::Code;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

use crate::common::*;

/// ScoreRequest's wire layout with `user_id` as bytes, so a test can send
/// what a buggy client would: a string field that is not UTF-8.
#[derive(Clone, PartialEq, prost::Message)]
struct RawScoreRequest {
    #[prost(bytes = "vec", tag = "1")]
    user_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    message: Vec<u8>,
}

#[tokio::test]
async fn invalid_utf8_in_a_string_field_is_invalid_argument() {
    let server = TestServer::start().await;
    let channel = Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/chaff.v1.Chaff/Score");
    let codec: ProstCodec<RawScoreRequest, proto::ScoreResponse> = ProstCodec::default();
    let e = grpc
        .unary(
            tonic::Request::new(RawScoreRequest {
                user_id: vec![b'a', 0xff, 0xfe, b'b'],
                message: HAM.to_vec(),
            }),
            path,
            codec,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("UTF-8"), "{}", e.message());
    server.stop().await;
}

#[tokio::test]
async fn a_message_over_the_transport_limit_is_resource_exhausted_naming_the_flag() {
    let server = TestServer::start_with(Settings {
        max_message_bytes: 1000,
        ..Settings::default()
    })
    .await;
    let mut c = server.client().await;
    // Just over chaff's limit (the engine's check) and far over tonic's
    // transport limit (2 x limit + 1 MiB): the same code, the same flag.
    for size in [1001, 3 << 20] {
        let e = c
            .score(proto::ScoreRequest {
                user_id: "alice".into(),
                message: vec![b'a'; size],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{size} bytes: {e:?}");
        assert!(
            e.message().contains("--max-message-bytes"),
            "{size} bytes: {}",
            e.message()
        );
    }
    // The server still serves.
    score(&mut c, "alice", HAM).await;
    server.stop().await;
}

#[tokio::test]
async fn reflection_v1alpha_lists_chaff() {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let server = TestServer::start().await;
    let channel = Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut r = ServerReflectionClient::new(channel);
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
    server.stop().await;
}
