//! Classification workers are separate processes; killing one with SIGKILL in
//! the middle of a run loses no job: its lease runs out and another worker
//! takes the job over.

use std::time::Duration;

use kit::test_support::eventually;

use crate::support::{agora_serve, Proc};

fn agora(service: &str, port: u16, data_dir: &std::path::Path) -> Proc {
    let mut command = agora_serve(service, port);
    command.env("DATA_DIR", data_dir).env("CLASSIFIER_LEASE_SECS", "1").env_remove("QUEUE_URL");
    Proc(command.spawn().expect("agora starts"))
}

#[tokio::test]
async fn killing_a_worker_mid_run_loses_no_job() {
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _web = agora("classifier", port, data.path());
    let mut first = agora("classifier-worker", 0, data.path());
    let _second = agora("classifier-worker", 0, data.path());
    let url = format!("http://127.0.0.1:{port}");
    let c = reqwest::Client::new();
    eventually("the classifier to be ready", Duration::from_secs(30), || async {
        c.get(format!("{url}/readyz")).send().await.ok().filter(|r| r.status() == 200)
    })
    .await;

    let mut jobs = Vec::new();
    for i in 0..16 {
        let image = ["cat", "coffee", "rocket", "motorcycle"][i % 4];
        let resp = c
            .post(format!("{url}/classifications"))
            .json(&serde_json::json!({"model_id": "efficientnet-lite0", "image_id": image}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        jobs.push(resp.json::<serde_json::Value>().await.unwrap()["job_id"].as_str().unwrap().to_string());
    }
    // Kill the first worker as soon as work is under way.
    eventually("a job to start", Duration::from_secs(30), || async {
        for id in &jobs {
            let body: serde_json::Value =
                c.get(format!("{url}/classifications/{id}")).send().await.ok()?.json().await.ok()?;
            if body["task_status"] != "queued" {
                return Some(());
            }
        }
        None
    })
    .await;
    first.0.kill().expect("SIGKILL the worker");
    let _ = first.0.wait();

    for id in &jobs {
        let body = eventually("every job to finish", Duration::from_secs(90), || async {
            let body: serde_json::Value =
                c.get(format!("{url}/classifications/{id}")).send().await.ok()?.json().await.ok()?;
            (body["task_status"] == "finished" || body["task_status"] == "failed").then_some(body)
        })
        .await;
        assert_eq!(body["task_status"], "finished", "job {id}: {body}");
        assert_eq!(body["data"].as_array().map(Vec::len), Some(5));
    }
}
