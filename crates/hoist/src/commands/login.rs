//! `hoist login` and `hoist logout`: docker's credentials, in docker's files and helpers.

use std::io::{self, BufRead, IsTerminal, Read, Write};

use anyhow::{Result, bail};
use hoist_registry::endpoint::{DOCKER_HUB_AUTH_KEY, auth_key, normalize_host};
use hoist_registry::{Client, Credentials, DockerConfig, Endpoint, Secret, StoredIn};

use super::pull::registry_options;
use crate::cli::{LoginArgs, LogoutArgs};

pub(crate) fn login(args: &LoginArgs, out: &mut dyn Write) -> Result<()> {
    let server = args.server.as_deref().unwrap_or(DOCKER_HUB_AUTH_KEY);
    let host = normalize_host(server);
    let mut config = DockerConfig::load()?;
    let mut stderr = io::stderr();
    if args.password.is_some() {
        writeln!(
            stderr,
            "WARNING! Using --password via the CLI is insecure. Use --password-stdin."
        )?;
    }
    if args.password_stdin {
        if args.password.is_some() {
            bail!("--password and --password-stdin are mutually exclusive");
        }
        if args.username.is_none() {
            bail!("Must provide --username with --password-stdin");
        }
    }
    let password = if args.password_stdin {
        let mut s = String::new();
        io::stdin().read_to_string(&mut s)?;
        Some(s.trim_end_matches(['\n', '\r']).to_owned())
    } else {
        args.password.clone()
    };
    let credentials = match (&args.username, password) {
        (Some(u), Some(p)) => Credentials::Basic {
            username: u.clone(),
            password: Secret::new(p),
        },
        (None, None) => match config.get(&host)? {
            Some(stored) => {
                writeln!(out, "Authenticating with existing credentials...")?;
                stored
            }
            None => prompt(args.username.as_deref(), out)?,
        },
        (Some(u), None) => prompt(Some(u), out)?,
        (None, Some(_)) => bail!("Must provide --username with --password"),
    };
    let options = registry_options()?;
    let mut endpoint = Endpoint::new(&host, &options.insecure_registries)?;
    if !args.tls_verify {
        endpoint = endpoint.without_tls_verify();
    }
    let client = Client::with_credentials(endpoint, Some(credentials.clone()))?;
    let identity = client.verify_login()?;
    let to_store = match identity {
        Some(token) => Credentials::IdentityToken {
            username: credentials.username().to_owned(),
            token,
        },
        None => credentials,
    };
    if let StoredIn::File(path) = config.store(&host, &to_store)? {
        writeln!(
            stderr,
            "WARNING! Your credentials are stored unencrypted in '{}'.\n\
             Configure a credential helper to remove this warning. See\n\
             https://docs.docker.com/go/credential-store/\n",
            path.display()
        )?;
    }
    writeln!(out, "Login Succeeded")?;
    Ok(())
}

fn prompt(username: Option<&str>, out: &mut dyn Write) -> Result<Credentials> {
    if !io::stdin().is_terminal() {
        bail!("Cannot perform an interactive login from a non TTY device");
    }
    let stdin = io::stdin();
    let username = match username {
        Some(u) => u.to_owned(),
        None => {
            write!(out, "Username: ")?;
            out.flush()?;
            let mut u = String::new();
            stdin.lock().read_line(&mut u)?;
            u.trim().to_owned()
        }
    };
    if username.is_empty() {
        bail!("Username is required");
    }
    write!(out, "Password: ")?;
    out.flush()?;
    // No echo while the password is typed (stty acts on the terminal stdin is).
    let echo = |on: bool| {
        let _ = std::process::Command::new("stty")
            .arg(if on { "echo" } else { "-echo" })
            .stdin(std::process::Stdio::inherit())
            .status();
    };
    echo(false);
    let mut p = String::new();
    let read = stdin.lock().read_line(&mut p);
    echo(true);
    writeln!(out)?;
    read?;
    let p = p.trim_end_matches(['\n', '\r']).to_owned();
    if p.is_empty() {
        bail!("Password is required");
    }
    Ok(Credentials::Basic {
        username,
        password: Secret::new(p),
    })
}

pub(crate) fn logout(args: &LogoutArgs, out: &mut dyn Write) -> Result<()> {
    let server = args.server.as_deref().unwrap_or(DOCKER_HUB_AUTH_KEY);
    let host = normalize_host(server);
    let shown = auth_key(&host);
    let mut config = DockerConfig::load()?;
    if config.erase(&host)? {
        writeln!(out, "Removing login credentials for {shown}")?;
    } else {
        writeln!(out, "Not logged in to {shown}")?;
    }
    Ok(())
}
