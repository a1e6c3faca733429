//! The sample events under events/ are real API Gateway payloads: each one, invoked
//! the way `make invoke` (and `sam local invoke -e`) runs a function, gets the
//! response it is there to show.

use std::path::PathBuf;

#[tokio::test]
async fn every_sample_event_invokes_its_function() {
    let env = devhost::LocalEnv::start(devhost::LocalEnvOptions::default())
        .await
        .unwrap();
    let functions = devhost::FunctionRegistry::conduit();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events/credentials");
    let expected = [
        ("list-providers.json", 200),
        ("get-provider.json", 200),
        ("create-connection.json", 201),
        ("list-connections.json", 200),
        ("test-new-connection.json", 200),
        ("get-connection-bad-id.json", 400),
        ("put-app-credentials.json", 201),
        ("member-create-forbidden.json", 403),
    ];
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let status = expected
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| *s)
            .unwrap_or_else(|| panic!("no expectation for events/credentials/{name}"));
        let event = std::fs::read_to_string(&path).unwrap();
        let resp = devhost::invoke::invoke(&env.stack, &functions, "credentials", &event)
            .await
            .unwrap();
        assert_eq!(resp["statusCode"], status, "{name}: {resp}");
        seen += 1;
    }
    assert_eq!(seen, expected.len());
    env.shutdown().await;
}
