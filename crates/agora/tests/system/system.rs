//! `System`: any set of services behind a gateway, each in the test's process or as a child
//! `agora serve <service>` process (which a test can SIGKILL or SIGSTOP), on SQLite or on a fresh
//! PostgreSQL database, and typed requests through the gateway as a user makes them.
//!
//! ```ignore
//! let mut system = System::builder().with(Service::Auth).with(Service::Threads).child(Service::Projects).start().await;
//! let popee = system.sign_up("popee").await;
//! let proposed = system.propose(&popee, &Proposal::seed()).await;
//! system.kill(Service::Projects);
//! ```
//!
//! The registry and the gateway always run, in the test's process unless asked otherwise; `start`
//! returns once the gateway routes to every service started.

use std::path::Path;
use std::time::Duration;

use kit::config::ServiceConfig;
use kit::test_support::{eventually, fresh_db, Backend, Fault, FaultProxy, Running, TestDb};
use projects::domain::{Direction, ThreadType};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::support::Proc;

/// How long a service gets to start, register and be routed to.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The services a `System` can start, named as `agora serve` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code, reason = "every service can be started; not every one is yet")]
pub enum Service {
    Gateway,
    Jokes,
    Auth,
    Threads,
    Projects,
    Classifier,
    /// The media API (needs `Auth`).
    Media,
    /// The media converter: a worker, it does not register; it shares the media database and data.
    Converter,
    /// The notifications service (needs `Auth`); it hears the media roles' events (their bus,
    /// under the media data directory).
    Notifications,
}

impl Service {
    /// Its name in the registry and on `agora serve`'s command line.
    pub fn name(self) -> &'static str {
        match self {
            Service::Gateway => "gateway",
            Service::Jokes => "jokes",
            Service::Auth => "auth",
            Service::Threads => "threads",
            Service::Projects => "projects",
            Service::Classifier => "classifier",
            Service::Media => "media",
            Service::Converter => "converter",
            Service::Notifications => "notifications",
        }
    }

    /// The database it uses: a worker role shares its service's.
    fn database(self) -> Option<&'static str> {
        match self {
            Service::Auth | Service::Threads | Service::Projects | Service::Notifications => Some(self.name()),
            Service::Media | Service::Converter => Some("media"),
            _ => None,
        }
    }

    /// A path the gateway answers 200 on only once it routes to this service.
    fn probe(self) -> Option<&'static str> {
        match self {
            Service::Gateway | Service::Threads | Service::Converter => None,
            // Its routes all need a user; the gateway serves its document once it reaches it.
            Service::Media => Some("/openapi/media.json"),
            Service::Notifications => Some("/openapi/notifications.json"),
            Service::Jokes => Some("/joke"),
            Service::Auth => Some("/.well-known/jwks.json"),
            Service::Projects => Some("/projects"),
            Service::Classifier => Some("/info"),
        }
    }
}

/// Where a service of a `System` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    InProcess,
    Child,
}

/// What to start: `System::builder()`, then `with`/`child` per service, `on` a backend, `start`.
pub struct SystemBuilder {
    services: Vec<(Service, Placement)>,
    backend: Backend,
    upload_limit: Option<u64>,
    /// Services whose database is reached through a fault proxy.
    faulty: Vec<Service>,
}

/// One running instance of a service.
pub struct Instance {
    /// Which service it is.
    pub service: Service,
    /// `http://127.0.0.1:port`.
    pub url: String,
    handle: Handle,
}

/// How a test holds an instance: stopping it is dropping this.
enum Handle {
    InProcess { _service: Running },
    Converter { _converter: media::testing::RunningConverter },
    Child(Proc),
}

/// Services started by a `SystemBuilder`, stopped when it is dropped (children are killed).
pub struct System {
    /// The registry every service registers with (always in the test's process).
    pub registry: Running,
    /// The gateway, the way in for users.
    pub gateway: Instance,
    instances: Vec<Instance>,
    http: reqwest::Client,
    /// The fault proxies in front of databases, by service.
    proxies: Vec<(Service, FaultProxy)>,
    // Kept alive while the services use them.
    databases: Vec<(&'static str, TestDb)>,
    data: tempfile::TempDir,
    auth: bool,
}

impl System {
    /// A builder for a system of the registry and the gateway only, on SQLite.
    pub fn builder() -> SystemBuilder {
        SystemBuilder { services: Vec::new(), backend: Backend::Sqlite, upload_limit: None, faulty: Vec::new() }
    }
}

impl SystemBuilder {
    /// Adds an instance of `service` running in the test's process (call twice for two).
    pub fn with(mut self, service: Service) -> Self {
        self.services.push((service, Placement::InProcess));
        self
    }

    /// Adds an instance of `service` as a child `agora serve` process, which `System::kill`,
    /// `pause` and `resume` can signal.
    pub fn child(mut self, service: Service) -> Self {
        self.services.push((service, Placement::Child));
        self
    }

    /// Puts the services' databases on `backend` (each service a fresh database of its own).
    #[allow(dead_code, reason = "for the PostgreSQL system tests of the events, media and shop issues")]
    pub fn on(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Sets the upload limit of the gateway and of the media services in the test's process
    /// (`MEDIA_MAX_UPLOAD_BYTES`), instead of 1 GiB.
    pub fn upload_limit(mut self, bytes: u64) -> Self {
        self.upload_limit = Some(bytes);
        self
    }

    /// Connects `service` to its PostgreSQL database through a fault proxy, so that the test can
    /// make an outage of that database with [`System::fault`] (the shared server keeps running).
    pub fn database_through_fault_proxy(mut self, service: Service) -> Self {
        self.faulty.push(service);
        self
    }

    /// Starts the registry, the services in the order added, and the gateway (in process unless
    /// added with `child`), and waits until the gateway routes to each of them.
    pub async fn start(self) -> System {
        let registry = registry::testing::spawn(registry::Config::for_tests()).await;
        let data = tempfile::tempdir().unwrap();
        let mut databases = Vec::new();
        let mut proxies: Vec<(Service, FaultProxy)> = Vec::new();
        let mut instances = Vec::new();
        let mut gateway = None;
        let auth = self.services.iter().any(|(s, _)| *s == Service::Auth);
        for (service, placement) in &self.services {
            let database = match service.database() {
                Some(name) => {
                    // Replicas of one service share its database, as in production.
                    let index = match databases.iter().position(|(n, _): &(&str, TestDb)| *n == name) {
                        Some(index) => index,
                        None => {
                            databases.push((name, fresh_db(&self.backend, name).await));
                            databases.len() - 1
                        }
                    };
                    let url = databases[index].1.url.clone();
                    match proxies.iter().find(|(s, _)| s == service) {
                        Some((_, proxy)) => Some(proxy.url(&url)),
                        None if self.faulty.contains(service) => {
                            assert!(url.starts_with("postgres"), "a fault proxy needs the PostgreSQL backend");
                            let proxy = FaultProxy::in_front_of(&url).await;
                            let through = proxy.url(&url);
                            proxies.push((*service, proxy));
                            Some(through)
                        }
                        None => Some(url),
                    }
                }
                None => None,
            };
            let instance = match placement {
                Placement::InProcess => {
                    let (registry, database) = (&registry.as_url(), database.as_deref());
                    in_process(*service, registry, database, data.path(), auth, self.upload_limit).await
                }
                Placement::Child => child(*service, &registry, database.as_deref(), data.path()).await,
            };
            if *service == Service::Gateway {
                gateway = Some(instance);
            } else {
                instances.push(instance);
            }
        }
        let gateway = match gateway {
            Some(gateway) => gateway,
            None => in_process(Service::Gateway, &registry.as_url(), None, data.path(), auth, self.upload_limit).await,
        };
        let system =
            System { registry, gateway, instances, http: kit::test_support::client(), proxies, databases, data, auth };
        for probe in system.instances.iter().filter_map(|i| i.service.probe()) {
            let url = system.url(probe);
            eventually(&format!("the gateway to route {probe}"), START_TIMEOUT, || {
                let (http, url) = (system.http.clone(), url.clone());
                async move { http.get(&url).send().await.ok().filter(|r| r.status() == 200) }
            })
            .await;
        }
        system
    }
}

/// Starts `service` in the test's process, registered with `registry`.
async fn in_process(
    service: Service,
    registry: &url::Url,
    database: Option<&str>,
    data: &Path,
    auth: bool,
    upload_limit: Option<u64>,
) -> Instance {
    let mut config = ServiceConfig::for_tests(service.name(), Some(registry.clone()));
    // Short heartbeats: the registry evicts a silent instance after 3 s.
    config.heartbeat = Duration::from_millis(200);
    let database = || database.expect("a database for this service").to_string();
    let running = match service {
        Service::Gateway => {
            let mut gateway = gateway::Config::for_tests(registry.clone());
            gateway.service = config;
            if let Some(limit) = upload_limit {
                gateway.upload_limit = usize::try_from(limit).unwrap_or(usize::MAX) + 64 * 1024;
            }
            gateway::testing::spawn(gateway).await
        }
        Service::Jokes => jokes::testing::spawn(jokes::Config { service: config }).await,
        Service::Auth => {
            let mut auth = auth::Config::for_tests(database());
            auth.service = config;
            auth::testing::spawn(auth).await
        }
        Service::Threads => {
            let mut threads = threads::Config::for_tests(database());
            threads.service = config;
            threads::testing::spawn(threads).await
        }
        Service::Projects => {
            assert!(auth, "projects verifies tokens against the auth service's keys: add Service::Auth");
            let keys = kit::auth::KeySource::Discovery(kit::discovery::Discovery::Registry(
                kit::registry_client::RegistryClient::new(registry),
            ));
            let mut projects = projects::Config::for_tests(database(), "", keys);
            projects.service = config;
            projects::testing::spawn(projects).await
        }
        Service::Classifier => {
            let dir = data.join(format!("classifier-{}", rand::random::<u32>()));
            std::fs::create_dir_all(&dir).unwrap();
            let mut classifier = classifier::Config::for_tests(&dir, None);
            classifier.service = config;
            classifier::testing::spawn(classifier).await
        }
        Service::Media | Service::Converter => {
            assert!(auth, "media verifies tokens against the auth service's keys: add Service::Auth");
            let keys = kit::auth::KeySource::Discovery(kit::discovery::Discovery::Registry(
                kit::registry_client::RegistryClient::new(registry),
            ));
            let mut media = media::Config::for_tests(&database(), &data.join("media"), keys);
            media.service = config;
            media.max_upload_bytes = upload_limit.unwrap_or(media::DEFAULT_MAX_UPLOAD_BYTES);
            if service == Service::Converter {
                let converter = media::testing::spawn_converter(media);
                return Instance { service, url: String::new(), handle: Handle::Converter { _converter: converter } };
            }
            media::testing::spawn(media).await
        }
        Service::Notifications => {
            assert!(auth, "notifications verifies tokens against the auth service's keys: add Service::Auth");
            let keys = kit::auth::KeySource::Discovery(kit::discovery::Discovery::Registry(
                kit::registry_client::RegistryClient::new(registry),
            ));
            // The media roles' bus: the embedded one under their data directory.
            let mut notifications = notifications::Config::for_tests(&database(), &data.join("media"), keys);
            notifications.service = config;
            notifications::testing::spawn_notifications(notifications).await
        }
    };
    Instance { service, url: running.url.clone(), handle: Handle::InProcess { _service: running } }
}

/// Starts `service` as `agora serve <service>` on a port of its choosing, and waits until it has
/// registered (which is how the test learns the port).
async fn child(service: Service, registry: &Running, database: Option<&str>, data: &Path) -> Instance {
    let instance_id = format!("{}-child-{}", service.name(), rand::random::<u32>());
    // The media roles share their blobs, queue and events under one data directory; the
    // notifications service hears their events there.
    let data_dir = match service {
        Service::Media | Service::Converter | Service::Notifications => data.join("media"),
        _ => data.join(&instance_id),
    };
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_agora"));
    command
        .args(["serve", service.name()])
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("REGISTRY_URL", &registry.url)
        .env("INSTANCE_ID", &instance_id)
        .env("HEARTBEAT_SECS", "0.2")
        .env("DATA_DIR", data_dir)
        // A killed converter's job goes to another within 2 s.
        .env("MEDIA_LEASE_SECS", "2")
        .env("RUST_LOG", "warn")
        .env_remove("PEERS")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit());
    if let Some(database) = database {
        command.env("DATABASE_URL", database);
    }
    let process = Proc(command.spawn().expect("agora serve starts"));
    if service == Service::Converter {
        // A worker does not register; it reports to the media database once it can convert.
        return Instance { service, url: String::new(), handle: Handle::Child(process) };
    }
    let url = format!("{}/v1/services/{}", registry.url, service.name());
    let address = eventually(&format!("{instance_id} to register"), START_TIMEOUT, || {
        let (url, instance_id) = (url.clone(), instance_id.clone());
        async move {
            let listed: Instances = reqwest::get(&url).await.ok()?.json().await.ok()?;
            listed.instances.into_iter().find(|i| i.instance_id == instance_id).map(|i| i.address)
        }
    })
    .await;
    Instance { service, url: format!("http://{address}"), handle: Handle::Child(process) }
}

/// `GET /v1/services/{name}` of the registry.
#[derive(Deserialize)]
struct Instances {
    instances: Vec<Registered>,
}

#[derive(Deserialize)]
struct Registered {
    instance_id: String,
    address: String,
}

impl Instance {
    fn pid(&self) -> libc::pid_t {
        match &self.handle {
            Handle::Child(process) => process.0.id() as libc::pid_t,
            Handle::InProcess { .. } | Handle::Converter { .. } => {
                panic!("{} runs in the test's process: start it with `child`", self.service.name())
            }
        }
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid; it has not been reaped (Proc waits only on drop).
        let sent = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(sent, 0, "cannot signal {}", self.service.name());
    }
}

impl System {
    /// Starts one more instance of `service` in the test's process (on the database of its
    /// kind already started, if any).
    pub async fn add(&mut self, service: Service) {
        let database = service
            .database()
            .and_then(|name| self.databases.iter().find(|(n, _)| *n == name))
            .map(|(_, db)| db.url.clone());
        let registry = self.registry.as_url();
        let instance = in_process(service, &registry, database.as_deref(), self.data.path(), self.auth, None).await;
        self.instances.push(instance);
    }

    /// The directory the services keep their files in (the media roles under `media/`).
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// `path` on the gateway.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.url)
    }

    /// The instances of `service`, in the order started.
    pub fn instances(&self, service: Service) -> impl Iterator<Item = &Instance> {
        self.instances.iter().filter(move |i| i.service == service)
    }

    #[allow(dead_code, reason = "used by pause and resume")]
    fn first(&self, service: Service) -> &Instance {
        self.instances(service).next().unwrap_or_else(|| panic!("no {} in this system", service.name()))
    }

    /// Kills the first child instance of `service` with SIGKILL: no deregistration, no draining.
    pub fn kill(&mut self, service: Service) {
        let index = self
            .instances
            .iter()
            .position(|i| i.service == service && matches!(i.handle, Handle::Child(_)))
            .unwrap_or_else(|| panic!("no child {} to kill", service.name()));
        let instance = self.instances.remove(index);
        instance.signal(libc::SIGKILL);
    }

    /// Freezes the first instance of `service` (SIGSTOP): its sockets stay open but nothing answers.
    #[allow(dead_code, reason = "for the tests of a hung instance (events, media, shop issues)")]
    pub fn pause(&self, service: Service) {
        self.first(service).signal(libc::SIGSTOP);
    }

    /// Lets a paused instance of `service` run again (SIGCONT).
    #[allow(dead_code, reason = "for the tests of a hung instance (events, media, shop issues)")]
    pub fn resume(&self, service: Service) {
        self.first(service).signal(libc::SIGCONT);
    }

    /// Starts (or with [`Fault::Pass`] ends) an outage of `service`'s database (see
    /// [`SystemBuilder::database_through_fault_proxy`]).
    pub fn fault(&self, service: Service, fault: Fault) {
        let (_, proxy) = self.proxies.iter().find(|(s, _)| *s == service).expect("a fault proxy for this service");
        proxy.set(fault);
    }

    /// Signs `name` up through the gateway and logs in.
    pub async fn sign_up(&self, name: &str) -> User {
        let credentials = json!({"username": name, "password": User::PASSWORD});
        let resp = self.http.post(self.url("/signup")).json(&credentials).send().await.unwrap();
        assert_eq!(resp.status(), 201, "signing up {name}");
        let resp = self.http.post(self.url("/login")).json(&credentials).send().await.unwrap();
        assert_eq!(resp.status(), 200, "logging in {name}");
        let token: TokenResponse = resp.json().await.unwrap();
        User { token: token.access_token }
    }

    /// Proposes `proposal` as `user`; answers what the projects service said.
    pub async fn propose(&self, user: &User, proposal: &Proposal) -> Proposed {
        let resp =
            self.http.post(self.url("/projects/propose")).bearer_auth(&user.token).json(proposal).send().await.unwrap();
        assert_eq!(resp.status(), 201, "proposing {}", proposal.project_name);
        resp.json().await.unwrap()
    }

    /// The project page of `project_id`, as `reader` sees it (anonymous when `None`).
    pub async fn project(&self, project_id: i64, reader: Option<&User>) -> Project {
        let mut request = self.http.get(self.url(&format!("/projects/{project_id}")));
        if let Some(user) = reader {
            request = request.bearer_auth(&user.token);
        }
        let resp = request.send().await.unwrap();
        assert_eq!(resp.status(), 200, "reading project {project_id}");
        resp.json().await.unwrap()
    }

    /// The client the helpers use (no connection reuse across restarts).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

/// A signed-up user.
pub struct User {
    /// A bearer token from `/login`.
    pub token: String,
}

impl User {
    const PASSWORD: &str = "correct horse battery staple";
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
}

/// `POST /projects/propose` body.
#[derive(Debug, Clone, Serialize)]
pub struct Proposal {
    pub project_name: String,
    pub tagline: String,
    pub problems: Vec<String>,
    pub solutions: Vec<String>,
    pub tags: Vec<String>,
}

impl Proposal {
    /// Seed 003's proposal: two problems, one solution, two tags.
    pub fn seed() -> Self {
        let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
        Self {
            project_name: "Popee the Performer".into(),
            tagline: "an apprentice clown in Wolf Circus".into(),
            problems: strings(&["short temper", "self centered"]),
            solutions: strings(&["play the drums"]),
            tags: strings(&["clown", "circus"]),
        }
    }
}

/// `POST /projects/propose` answer.
#[derive(Debug, Deserialize)]
pub struct Proposed {
    pub project_id: i64,
    /// `created`, or `pending` while the threads service is unreachable.
    pub threads: String,
}

/// `GET /projects/{id}` answer (what tests read of it so far).
#[derive(Debug, Deserialize)]
pub struct Project {
    pub project_name: String,
    pub tags: Vec<String>,
    /// `None` when the threads service could not be asked.
    pub threads: Option<Vec<Thread>>,
    pub threads_pending: i64,
}

/// A thread on a project page (what tests read of it so far).
#[derive(Debug, Deserialize)]
pub struct Thread {
    pub thread_id: i64,
    pub thread_type: ThreadType,
    pub message: String,
    pub my_vote: Direction,
}
