//! Shell completions and manual pages, generated from the same clap definitions that parse the
//! command lines (`clap_complete`, `clap_mangen`), so they cannot drift from them.

use std::path::Path;

use clap::CommandFactory;

use crate::commands::{Result, emit};
use crate::failure::{Class, Failure};

/// `mmshare completions SHELL [--daemon]`: the script on standard output.
pub fn completions(shell: clap_complete::Shell, daemon: bool) -> Result {
    let (mut command, name) = if daemon {
        (mmshare_daemon::Config::command(), "mmshared")
    } else {
        (crate::Cli::command(), "mmshare")
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    let script = String::from_utf8(script)
        .map_err(|e| Failure::from(format!("completion script is not UTF-8: {e}")))?;
    emit(script.trim_end())
}

/// `mmshare man DIR`: `mmshare.1`, `mmshare-SUBCOMMAND.1` for each subcommand that is not
/// hidden, and `mmshared.1`; prints each path it wrote.
pub fn man_pages(dir: &Path) -> Result {
    std::fs::create_dir_all(dir).map_err(|e| {
        Failure::new(
            crate::failure::io_class(&e),
            format!("cannot create {}: {e}", dir.display()),
        )
    })?;
    let cli = crate::Cli::command();
    let mut pages = vec![("mmshare".to_owned(), cli.clone())];
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("mmshare-{}", sub.get_name());
        let page = sub.clone().name(name.clone());
        pages.push((name, page));
    }
    pages.push(("mmshared".to_owned(), mmshare_daemon::Config::command()));
    for (name, command) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut roff = Vec::new();
        clap_mangen::Man::new(command)
            .render(&mut roff)
            .map_err(|e| Failure::new(Class::Other, format!("cannot render {name}.1: {e}")))?;
        std::fs::write(&path, roff).map_err(|e| {
            Failure::new(
                crate::failure::io_class(&e),
                format!("cannot write {}: {e}", path.display()),
            )
        })?;
        emit(&path.display().to_string())?;
    }
    Ok(())
}
