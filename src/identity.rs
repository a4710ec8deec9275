//! Who runs this process, as the kernel knows it: the one identity reader of Retort.
//!
//! The audit actor of every record a person causes, the policy's export check
//! (`export.users` / `export.groups`) and the workspace permission checks all read the
//! identity here, never from an environment variable (`$USER` and `$LOGNAME` are whatever the
//! caller sets).
//!
//! - **Effective user** (`/proc/self/status`, `Uid:` second field): the uid whose file
//!   permissions the process acts with. Its name comes from `/etc/passwd`; a uid without an
//!   entry is written `uid:N` (a `:` cannot occur in a user name, so this never collides).
//! - **Groups** (`Gid:` effective and `Groups:`), named through `/etc/group` (`gid:N` without an
//!   entry).
//! - **Login user** (`/proc/self/loginuid`): the uid the kernel's audit subsystem attached to
//!   the login session. It survives `sudo`, `su` and `setpriv`, so `sudo -u retort retort …`
//!   run by alice is recorded as `user:retort (login alice)`. `4294967295` means "unset"
//!   (processes started outside a login session: containers, early boot, some services).
//!
//! # Actor format (audit records, `audit show`, the HTML report)
//! `user:NAME` when no login uid is set or it equals the effective uid, else
//! `user:NAME (login LOGIN)`; `NAME` and `LOGIN` are names or `uid:N`. Requests served to a
//! partner are recorded as `partner:NAME` and records Retort writes on its own as `system`
//! (those actors are not produced here).

use std::sync::OnceLock;

/// The value of `/proc/self/loginuid` that means "no login uid set".
pub const LOGINUID_UNSET: u32 = u32::MAX;

/// The process's identity.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// Effective uid (`None` only where `/proc` cannot be read).
    pub uid: Option<u32>,
    /// Name of the effective user, `uid:N` without a passwd entry, `unknown` without `/proc`.
    pub user: String,
    /// Effective gid first, then the supplementary gids (no duplicates).
    pub gids: Vec<u32>,
    /// Names of [`Identity::gids`], in the same order (`gid:N` without a group entry).
    pub groups: Vec<String>,
    /// The login uid, when set and different from the effective uid.
    pub login_uid: Option<u32>,
    /// Name of the login uid (`uid:N` without a passwd entry).
    pub login: Option<String>,
}

impl Identity {
    /// The identity of this process (read once, then cached: the process never changes its
    /// uid).
    pub fn current() -> &'static Identity {
        static CURRENT: OnceLock<Identity> = OnceLock::new();
        CURRENT.get_or_init(Identity::read)
    }

    /// Read the identity from `/proc` and the account databases now.
    pub fn read() -> Identity {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let loginuid = std::fs::read_to_string("/proc/self/loginuid").ok();
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
        Identity::from_tables(&status, loginuid.as_deref(), &passwd, &group)
    }

    /// The identity described by the given `/proc/self/status`, `/proc/self/loginuid`,
    /// `/etc/passwd` and `/etc/group` texts (pure; for tests).
    pub fn from_tables(
        status: &str,
        loginuid: Option<&str>,
        passwd: &str,
        group: &str,
    ) -> Identity {
        let ids = |name: &str| -> Vec<u32> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| {
                    v.split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        let uid = ids("Uid:").get(1).copied();
        let mut gids: Vec<u32> = Vec::new();
        for g in ids("Gid:")
            .get(1)
            .copied()
            .into_iter()
            .chain(ids("Groups:"))
        {
            if !gids.contains(&g) {
                gids.push(g);
            }
        }
        let login_uid = loginuid
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|&l| l != LOGINUID_UNSET && Some(l) != uid);
        Identity {
            uid,
            user: uid.map_or_else(|| "unknown".into(), |u| name_in(passwd, u, "uid")),
            groups: gids.iter().map(|&g| name_in(group, g, "gid")).collect(),
            gids,
            login: login_uid.map(|l| name_in(passwd, l, "uid")),
            login_uid,
        }
    }

    /// An identity given by names, without ids (embedding programs that check the policy for
    /// someone else; tests).
    pub fn named(user: &str, groups: &[&str]) -> Identity {
        Identity {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Identity::default()
        }
    }

    /// The audit actor: `user:NAME` or `user:NAME (login LOGIN)` (see the module docs).
    pub fn actor(&self) -> String {
        match &self.login {
            Some(l) => format!("user:{} (login {l})", self.user),
            None => format!("user:{}", self.user),
        }
    }

    /// Whether the effective uid is 0 (root ignores file modes).
    pub fn is_root(&self) -> bool {
        self.uid == Some(0)
    }

    /// Whether the process is in group `gid` (effective or supplementary).
    pub fn in_group(&self, gid: u32) -> bool {
        self.gids.contains(&gid)
    }
}

/// The name of `uid` (`/etc/passwd`), or `uid:N`.
pub fn user_name(uid: u32) -> String {
    name_in(
        &std::fs::read_to_string("/etc/passwd").unwrap_or_default(),
        uid,
        "uid",
    )
}

/// The name of `gid` (`/etc/group`), or `gid:N`.
pub fn group_name(gid: u32) -> String {
    name_in(
        &std::fs::read_to_string("/etc/group").unwrap_or_default(),
        gid,
        "gid",
    )
}

/// The gid of a group given by name (`/etc/group`) or as a number (`2001`, `gid:2001`).
pub fn group_id(name: &str) -> Option<u32> {
    let n = name.strip_prefix("gid:").unwrap_or(name);
    if let Ok(g) = n.parse::<u32>() {
        return Some(g);
    }
    id_in(
        &std::fs::read_to_string("/etc/group").unwrap_or_default(),
        n,
    )
}

/// `name:x:ID:…` tables: the name whose third field is `id`, or `{kind}:{id}`.
fn name_in(table: &str, id: u32, kind: &str) -> String {
    let id_s = id.to_string();
    table
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let _ = f.next()?;
            (f.next()? == id_s && !name.is_empty()).then(|| name.to_string())
        })
        .unwrap_or_else(|| format!("{kind}:{id}"))
}

/// The id of `name` in a `name:x:ID:…` table.
fn id_in(table: &str, name: &str) -> Option<u32> {
    table.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        let _ = f.next()?;
        f.next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tretort\nUid:\t1000\t1001\t1001\t1001\nGid:\t100\t2001\t2001\t2001\nGroups:\t2001 2002 3000 \n";
    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:100::/home/alice:/bin/sh\nretort:x:1001:2001::/var/lib/retort:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nretort:x:2001:\nretort-audit:x:2002:alice\n";

    #[test]
    fn effective_user_groups_and_login() {
        let id = Identity::from_tables(STATUS, Some("1000"), PASSWD, GROUP);
        assert_eq!(id.uid, Some(1001));
        assert_eq!(id.user, "retort");
        assert_eq!(id.gids, vec![2001, 2002, 3000]);
        assert_eq!(id.groups, vec!["retort", "retort-audit", "gid:3000"]);
        assert_eq!(id.login.as_deref(), Some("alice"));
        assert_eq!(id.actor(), "user:retort (login alice)");
        assert!(id.in_group(2002) && !id.in_group(100));
    }

    #[test]
    fn unset_or_same_login_uid_is_not_shown() {
        for l in [Some("4294967295\n"), Some("1001"), None, Some("garbage")] {
            let id = Identity::from_tables(STATUS, l, PASSWD, GROUP);
            assert_eq!(id.actor(), "user:retort", "{l:?}");
        }
    }

    #[test]
    fn ids_without_entries_are_numeric() {
        let id = Identity::from_tables(STATUS, Some("4242"), "", "");
        assert_eq!(id.actor(), "user:uid:1001 (login uid:4242)");
        assert_eq!(id.groups[0], "gid:2001");
        let none = Identity::from_tables("", None, PASSWD, GROUP);
        assert_eq!(none.uid, None);
        assert_eq!(none.actor(), "user:unknown");
    }

    #[test]
    fn group_lookup_by_name_or_number() {
        assert_eq!(id_in(GROUP, "retort-audit"), Some(2002));
        assert_eq!(id_in(GROUP, "nope"), None);
        assert_eq!(group_id("2002"), Some(2002));
        assert_eq!(group_id("gid:77"), Some(77));
    }

    #[test]
    fn the_environment_is_never_read() {
        // The current identity is the kernel's: the effective uid in /proc matches the owner of
        // a file this process creates, whatever $USER says.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata(&p).unwrap().uid();
        assert_eq!(Identity::read().uid, Some(owner));
    }
}
