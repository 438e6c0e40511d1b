//! The command line, in docker's shape.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "hoist",
    version,
    about = "A daemonless, Docker-compatible image builder",
    disable_help_subcommand = true
)]
pub(crate) struct Cli {
    /// Store location (default: /var/lib/hoist as root, $XDG_DATA_HOME/hoist otherwise)
    #[arg(long, global = true, env = "HOIST_ROOT", value_name = "DIR")]
    pub(crate) root: Option<PathBuf>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Build an image from a Dockerfile
    Build(BuildArgs),
    /// List images
    Images(ImagesArgs),
    /// Show the history of an image
    History(HistoryArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(TagArgs),
    /// Remove one or more images
    Rmi(RmiArgs),
    /// Return low-level information on images
    Inspect(InspectArgs),
    /// Import the contents from a tarball to create a filesystem image
    Import(ImportArgs),
    /// Save one or more images to a tar archive (streamed to STDOUT by default)
    Save(SaveArgs),
    /// Load an image from a tar archive or STDIN
    Load(LoadArgs),
    /// Download an image from a registry
    Pull(PullArgs),
    /// Upload an image to a registry
    Push(PushArgs),
    /// Authenticate to a registry
    Login(LoginArgs),
    /// Log out from a registry
    Logout(LogoutArgs),
    /// Create and run a new container from an image (removed when it exits: hoist keeps no containers)
    Run(crate::commands::RunArgs),
    /// Manage images
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Manage the build cache
    Builder {
        #[command(subcommand)]
        command: BuilderCommand,
    },
    /// Manage hoist's storage
    System {
        #[command(subcommand)]
        command: SystemCommand,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum BuilderCommand {
    /// Remove build cache
    Prune(BuilderPruneArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum SystemCommand {
    /// Show disk usage
    Df(SystemDfArgs),
    /// Remove unused data: dangling images and build cache (with -a, all unused ones)
    Prune(SystemPruneArgs),
}

#[derive(Debug, Args)]
pub(crate) struct SystemPruneArgs {
    /// Remove all unused images not just dangling ones
    #[arg(short, long)]
    pub(crate) all: bool,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub(crate) force: bool,
    /// Prune volumes (an error: hoist keeps no volumes)
    #[arg(long)]
    pub(crate) volumes: bool,
    /// Provide filter values (e.g. 'label=<key>=<value>', 'label!=<key>', 'until=24h')
    #[arg(long = "filter", value_name = "filter")]
    pub(crate) filters: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct SystemDfArgs {
    /// Show detailed information on space usage
    #[arg(short, long)]
    pub(crate) verbose: bool,
    /// Format output using a custom template: 'table', 'table TEMPLATE', 'json' or a Go template
    #[arg(long, value_name = "string")]
    pub(crate) format: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct BuilderPruneArgs {
    /// Remove all unused build cache, not just dangling ones
    #[arg(short, long)]
    pub(crate) all: bool,
    /// Amount of disk space to keep for cache (e.g. 500MB, 2GB)
    #[arg(long, value_name = "SIZE")]
    pub(crate) keep_storage: Option<String>,
    /// Provide filter values (e.g. 'until=24h': cache no build used in the last 24 hours)
    #[arg(long = "filter", value_name = "filter")]
    pub(crate) filters: Vec<String>,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub(crate) force: bool,
}

#[derive(Debug, Subcommand)]
#[expect(clippy::large_enum_variant, reason = "parsed once per process")]
pub(crate) enum ImageCommand {
    /// Build an image from a Dockerfile
    Build(BuildArgs),
    /// List images
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Show the history of an image
    History(HistoryArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(TagArgs),
    /// Remove one or more images
    #[command(alias = "remove")]
    Rm(RmiArgs),
    /// Display detailed information on one or more images
    Inspect(InspectArgs),
    /// Import the contents from a tarball to create a filesystem image
    Import(ImportArgs),
    /// Save one or more images to a tar archive
    Save(SaveArgs),
    /// Load an image from a tar archive or STDIN
    Load(LoadArgs),
    /// Download an image from a registry
    Pull(PullArgs),
    /// Upload an image to a registry
    Push(PushArgs),
    /// Remove unused images
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ImagesArgs {
    /// Show all images (default hides intermediate images)
    #[arg(short, long)]
    pub(crate) all: bool,
    /// Only show image IDs
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// Show digests
    #[arg(long)]
    pub(crate) digests: bool,
    /// Don't truncate output
    #[arg(long)]
    pub(crate) no_trunc: bool,
    /// Filter output based on conditions provided
    #[arg(short, long = "filter", value_name = "filter")]
    pub(crate) filters: Vec<String>,
    /// Format output using a custom template ('table', 'table TEMPLATE', 'json', 'TEMPLATE')
    #[arg(long)]
    pub(crate) format: Option<String>,
    /// REPOSITORY[:TAG]
    pub(crate) repository: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct HistoryArgs {
    /// Print sizes and dates in human readable format
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub(crate) human: bool,
    /// Don't truncate output
    #[arg(long)]
    pub(crate) no_trunc: bool,
    /// Only show image IDs
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// Format output using a custom template
    #[arg(long)]
    pub(crate) format: Option<String>,
    pub(crate) image: String,
}

#[derive(Debug, Args)]
pub(crate) struct TagArgs {
    pub(crate) source: String,
    pub(crate) target: String,
}

#[derive(Debug, Args)]
pub(crate) struct RmiArgs {
    /// Force removal of the image
    #[arg(short, long)]
    pub(crate) force: bool,
    #[arg(required = true)]
    pub(crate) images: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// Format output using a custom template
    #[arg(short, long)]
    pub(crate) format: Option<String>,
    #[arg(required = true)]
    pub(crate) images: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// Apply Dockerfile instruction to the created image
    #[arg(short, long = "change")]
    pub(crate) changes: Vec<String>,
    /// Set commit message for imported image
    #[arg(short, long)]
    pub(crate) message: Option<String>,
    /// Set platform if server is multi-platform capable
    #[arg(long)]
    pub(crate) platform: Option<String>,
    /// file or - for STDIN
    pub(crate) file: String,
    /// REPOSITORY[:TAG]
    pub(crate) reference: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct SaveArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short, long)]
    pub(crate) output: Option<PathBuf>,
    #[arg(required = true)]
    pub(crate) images: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct LoadArgs {
    /// Read from tar archive file, instead of STDIN
    #[arg(short, long)]
    pub(crate) input: Option<PathBuf>,
    /// Suppress the load output
    #[arg(short, long)]
    pub(crate) quiet: bool,
}

#[derive(Debug, Args)]
pub(crate) struct PruneArgs {
    /// Remove all unused images, not just dangling ones
    #[arg(short, long)]
    pub(crate) all: bool,
    /// Provide filter values (e.g. 'until=<timestamp>', 'label=<key>[=<value>]', 'label!=<key>')
    #[arg(long = "filter", value_name = "filter")]
    pub(crate) filters: Vec<String>,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub(crate) force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct BuildArgs {
    /// Name and optionally a tag in the "name:tag" format
    #[arg(short, long = "tag", value_name = "NAME")]
    pub(crate) tags: Vec<String>,
    /// Name of the Dockerfile (default: "PATH/Dockerfile"; "-" reads it from stdin)
    #[arg(short, long)]
    pub(crate) file: Option<String>,
    /// Set build-time variables
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub(crate) build_args: Vec<String>,
    /// Set the target build stage to build
    #[arg(long)]
    pub(crate) target: Option<String>,
    /// Set metadata for an image
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub(crate) labels: Vec<String>,
    /// Set the networking mode for the RUN instructions during build (default, none, host)
    #[arg(long, default_value = "default")]
    pub(crate) network: String,
    /// Add a custom host-to-IP mapping ("host:ip")
    #[arg(long = "add-host", value_name = "HOST:IP")]
    pub(crate) add_hosts: Vec<String>,
    /// Write the image ID to the file
    #[arg(long)]
    pub(crate) iidfile: Option<std::path::PathBuf>,
    /// Suppress the build output and print image ID on success
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// Set type of progress output (auto, plain, tty, quiet)
    #[arg(long, default_value = "auto")]
    pub(crate) progress: String,
    /// Set target platform for build
    #[arg(long)]
    pub(crate) platform: Option<String>,
    /// Do not use cache when building the image
    #[arg(long)]
    pub(crate) no_cache: bool,
    /// Always attempt to pull a newer version of the image
    #[arg(long)]
    pub(crate) pull: bool,
    /// Do not cache specified stages
    #[arg(long, value_delimiter = ',', value_name = "STAGE")]
    pub(crate) no_cache_filter: Vec<String>,
    /// Print, for every step that runs, why its cache missed
    #[arg(long)]
    pub(crate) explain_cache: bool,
    /// Secret to expose to the build (format: "id=mysecret[,src=/local/secret]" or "id=x,env=VAR")
    #[arg(long = "secret", value_name = "SPEC")]
    pub(crate) secrets: Vec<String>,
    /// SSH agent socket or keys to expose to the build (format: "default|<id>[=<socket>]")
    #[arg(long = "ssh", value_name = "SPEC")]
    pub(crate) ssh: Vec<String>,
    /// Require HTTPS and verify certificates when talking to registries (podman's flag)
    #[arg(long, value_name = "BOOL", default_value_t = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub(crate) tls_verify: bool,
    /// Build context: a directory, a tar archive, or "-" for a tar or a Dockerfile on stdin
    pub(crate) context: String,
}

#[derive(Debug, Args)]
pub(crate) struct PullArgs {
    /// Download all tagged images in the repository
    #[arg(short, long)]
    pub(crate) all_tags: bool,
    /// Set platform if server is multi-platform capable
    #[arg(long)]
    pub(crate) platform: Option<String>,
    /// Suppress verbose output
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// Require HTTPS and verify certificates when talking to registries (podman's flag)
    #[arg(long, value_name = "BOOL", default_value_t = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub(crate) tls_verify: bool,
    /// NAME[:TAG|@DIGEST]
    pub(crate) name: String,
}

#[derive(Debug, Args)]
pub(crate) struct PushArgs {
    /// Push all tags of an image to the repository
    #[arg(short, long)]
    pub(crate) all_tags: bool,
    /// Suppress verbose output
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// Layer compression: gzip (Docker manifest) or zstd (OCI manifest)
    #[arg(long, value_name = "gzip|zstd")]
    pub(crate) compression: Option<String>,
    /// Require HTTPS and verify certificates when talking to registries (podman's flag)
    #[arg(long, value_name = "BOOL", default_value_t = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub(crate) tls_verify: bool,
    /// NAME[:TAG]
    pub(crate) name: String,
}

#[derive(Debug, Args)]
pub(crate) struct LoginArgs {
    /// Username
    #[arg(short, long)]
    pub(crate) username: Option<String>,
    /// Password or Personal Access Token (PAT)
    #[arg(short, long)]
    pub(crate) password: Option<String>,
    /// Take the Password or Personal Access Token (PAT) from stdin
    #[arg(long)]
    pub(crate) password_stdin: bool,
    /// Require HTTPS and verify certificates when talking to registries (podman's flag)
    #[arg(long, value_name = "BOOL", default_value_t = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub(crate) tls_verify: bool,
    /// SERVER
    pub(crate) server: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct LogoutArgs {
    /// SERVER
    pub(crate) server: Option<String>,
}
