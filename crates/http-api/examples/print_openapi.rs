//! Prints the OpenAPI document the gateway serves.
fn main() {
    println!(
        "{}",
        serde_json::to_string_pretty(&http_api::openapi()).expect("JSON values serialise")
    );
}
