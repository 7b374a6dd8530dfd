//! The command line: its definition (clap) and one file per subcommand, each a function of
//! its typed arguments that ends in `Ok` or an [`exit::Exit`].

pub mod args;
pub mod exit;
pub mod pin;
pub mod run;
pub mod schema;
pub mod test;
pub mod validate;
