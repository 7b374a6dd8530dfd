//! `schema`: print the Cedar schema generated from the tools (the configured source, or
//! `--tools`).

use policy_layer::model::schema::GatewaySchema;

use super::args::SchemaArgs;
use super::exit::Exit;
use crate::config::Config;
use crate::feed::tools;

/// Prints the schema on stdout.
///
/// # Errors
/// Exit 64 for a configuration that cannot be used; exit 1 when the tools cannot be had or
/// the schema cannot be generated.
pub async fn schema(args: &SchemaArgs) -> Result<(), Exit> {
    let config = Config::load(&args.config.config)?;
    let tools = tools::tools_for(&config, args.tools.as_deref())
        .await
        .map_err(Exit::failed)?;
    let Some(tools) = tools else {
        return Err(Exit::failed(
            "policy.schema = \"none\": no tools to print (pass --tools FILE)",
        ));
    };
    let catalog = tools.catalog();
    let schema = GatewaySchema::generate(&config.model(), &catalog).map_err(Exit::failed)?;
    println!("{}", schema.text);
    Ok(())
}
