//! Dropping root after the privileged work of start-up is done.
//!
//! Owns looking up `global.user` and `global.group` (names through
//! getpwnam_r/getgrnam_r, or numeric ids) and switching the process to
//! them: supplementary groups, then the group, then the user, in that
//! order, since after setuid the process could no longer change its groups.
//! It then checks that root cannot be regained. glibc applies setuid and
//! setgid to every thread of the process, so threads started before the
//! drop lose root too. The caller binds every listener, the admin listener
//! and opens the access log first, and refuses to run if the drop fails.

use std::ffi::{CStr, CString};
use std::fmt;
use std::io;

/// Who the process should run as, resolved from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user id to switch to; may have no passwd entry if given as a
    /// number.
    pub uid: libc::uid_t,
    /// The group id to switch to, and the only supplementary group: the
    /// user's primary group unless `global.group` names one.
    pub gid: libc::gid_t,
    /// The user's name, or its id when the id has no passwd entry.
    pub user: String,
    /// The group's name, or its id when the id has no group entry.
    pub group: String,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "user {} (uid {}), group {} (gid {})",
            self.user, self.uid, self.group, self.gid
        )
    }
}

/// A user from the passwd database: its id, name and primary group.
struct User {
    uid: libc::uid_t,
    name: String,
    gid: libc::gid_t,
}

/// Resolves `user` (a name or a numeric uid) and `group` (a name or a
/// numeric gid; by default the user's primary group). An error is a full
/// message naming the field at fault, for validation.
pub fn resolve(user: &str, group: Option<&str>) -> Result<Identity, (&'static str, String)> {
    let user = lookup_user(user).map_err(|e| ("global.user", e))?;
    let (gid, group) = match group {
        Some(group) => lookup_group(group).map_err(|e| ("global.group", e))?,
        None => {
            let name = group_name(user.gid).unwrap_or_else(|| user.gid.to_string());
            (user.gid, name)
        }
    };
    Ok(Identity {
        uid: user.uid,
        gid,
        user: user.name,
        group,
    })
}

fn lookup_user(text: &str) -> Result<User, String> {
    if text.trim().is_empty() {
        return Err("must not be empty (leave the field out to keep the starting user)".into());
    }
    if let Ok(uid) = text.parse::<libc::uid_t>() {
        return Ok(passwd_by_uid(uid).unwrap_or(User {
            uid,
            name: uid.to_string(),
            // A bare id without a passwd entry: its group must be given
            // or it runs under the group of the same number.
            gid: uid,
        }));
    }
    passwd_by_name(text)
        .ok_or_else(|| format!("{text:?} is not a user on this host (no passwd entry)"))
}

fn lookup_group(text: &str) -> Result<(libc::gid_t, String), String> {
    if text.trim().is_empty() {
        return Err("must not be empty (leave the field out to use the user's group)".into());
    }
    if let Ok(gid) = text.parse::<libc::gid_t>() {
        return Ok((gid, group_name(gid).unwrap_or_else(|| gid.to_string())));
    }
    group_by_name(text)
        .map(|gid| (gid, text.to_string()))
        .ok_or_else(|| format!("{text:?} is not a group on this host (no group entry)"))
}

/// Calls a `get*_r` function with a growing scratch buffer until it fits;
/// `call` returns the function's error code and whether an entry was found.
fn with_buffer<T>(mut call: impl FnMut(&mut [u8]) -> (i32, Option<T>)) -> Option<T> {
    let mut size = 1024;
    loop {
        let mut buffer = vec![0u8; size];
        match call(&mut buffer) {
            (libc::ERANGE, _) if size < 1 << 20 => size *= 4,
            (0, found) => return found,
            _ => return None,
        }
    }
}

fn passwd_by_name(name: &str) -> Option<User> {
    let name = CString::new(name).ok()?;
    with_buffer(|buffer| {
        // SAFETY: an all-zero passwd is a valid value to be overwritten.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call and `buffer` is as
        // long as we say; the strings written point into `buffer`.
        let rc = unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                &mut entry,
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                &mut found,
            )
        };
        (rc, (!found.is_null()).then(|| user_of(&entry)))
    })
}

fn passwd_by_uid(uid: libc::uid_t) -> Option<User> {
    with_buffer(|buffer| {
        // SAFETY: as in passwd_by_name.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found = std::ptr::null_mut();
        // SAFETY: as in passwd_by_name.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                &mut entry,
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                &mut found,
            )
        };
        (rc, (!found.is_null()).then(|| user_of(&entry)))
    })
}

/// Copies what we need out of an entry whose strings live in the buffer.
fn user_of(entry: &libc::passwd) -> User {
    // SAFETY: a found entry's pw_name is a NUL-terminated string in the
    // buffer, still alive while the closure runs.
    let name = unsafe { CStr::from_ptr(entry.pw_name) };
    User {
        uid: entry.pw_uid,
        name: name.to_string_lossy().into_owned(),
        gid: entry.pw_gid,
    }
}

fn group_by_name(name: &str) -> Option<libc::gid_t> {
    let name = CString::new(name).ok()?;
    with_buffer(|buffer| {
        // SAFETY: an all-zero group is a valid value to be overwritten.
        let mut entry: libc::group = unsafe { std::mem::zeroed() };
        let mut found = std::ptr::null_mut();
        // SAFETY: as in passwd_by_name.
        let rc = unsafe {
            libc::getgrnam_r(
                name.as_ptr(),
                &mut entry,
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                &mut found,
            )
        };
        (rc, (!found.is_null()).then_some(entry.gr_gid))
    })
}

fn group_name(gid: libc::gid_t) -> Option<String> {
    with_buffer(|buffer| {
        // SAFETY: as in group_by_name.
        let mut entry: libc::group = unsafe { std::mem::zeroed() };
        let mut found = std::ptr::null_mut();
        // SAFETY: as in passwd_by_name.
        let rc = unsafe {
            libc::getgrgid_r(
                gid,
                &mut entry,
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                &mut found,
            )
        };
        let name = (!found.is_null()).then(|| {
            // SAFETY: as in user_of, for gr_name.
            unsafe { CStr::from_ptr(entry.gr_name) }
                .to_string_lossy()
                .into_owned()
        });
        (rc, name)
    })
}

/// What [`drop_to`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Root switched to the identity.
    Switched,
    /// Already running as the identity (started unprivileged as it).
    AlreadyThere,
}

/// Switches the whole process to `who`: `setgroups([gid])`, setgid, setuid,
/// then checks that the ids took and that setuid(0) fails. Without root
/// it succeeds only if the process already runs as `who`.
pub fn drop_to(who: &Identity) -> Result<Dropped, String> {
    // SAFETY: these getters cannot fail and have no preconditions.
    let (uid, euid, gid, egid) = unsafe {
        (
            libc::getuid(),
            libc::geteuid(),
            libc::getgid(),
            libc::getegid(),
        )
    };
    if euid != 0 {
        if (uid, euid, gid, egid) == (who.uid, who.uid, who.gid, who.gid) {
            return Ok(Dropped::AlreadyThere);
        }
        return Err(format!(
            "cannot switch to {who}: running as uid {euid} gid {egid}, not root; start as root or as that user"
        ));
    }
    let failed = |call: &str| {
        format!(
            "cannot switch to {who}: {call} failed: {}",
            io::Error::last_os_error()
        )
    };
    // SAFETY: plain system calls on ids; setgroups reads one gid.
    unsafe {
        if libc::setgroups(1, &who.gid) != 0 {
            return Err(failed("setgroups"));
        }
        if libc::setgid(who.gid) != 0 {
            return Err(failed("setgid"));
        }
        if libc::setuid(who.uid) != 0 {
            return Err(failed("setuid"));
        }
    }
    verify(who)?;
    Ok(Dropped::Switched)
}

/// The real, effective and saved ids are the target ones, and, unless the
/// target is root itself, root cannot be had back.
fn verify(who: &Identity) -> Result<(), String> {
    let (mut ruid, mut euid, mut suid) = (0, 0, 0);
    let (mut rgid, mut egid, mut sgid) = (0, 0, 0);
    // SAFETY: the calls write the three ids we pass pointers to.
    let rc = unsafe {
        libc::getresuid(&mut ruid, &mut euid, &mut suid)
            | libc::getresgid(&mut rgid, &mut egid, &mut sgid)
    };
    if rc != 0 || [ruid, euid, suid] != [who.uid; 3] || [rgid, egid, sgid] != [who.gid; 3] {
        return Err(format!(
            "switched to {who}, but the process now has uids {ruid}/{euid}/{suid} and gids {rgid}/{egid}/{sgid}"
        ));
    }
    // SAFETY: a plain system call; it is expected to fail.
    if who.uid != 0 && unsafe { libc::setuid(0) } == 0 {
        return Err(format!(
            "switched to {who}, but setuid(0) still succeeds: refusing to run with a way back to root"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_by_name_and_by_id_with_its_primary_group() {
        let by_name = resolve("root", None).expect("root exists");
        assert_eq!((by_name.uid, by_name.gid), (0, 0));
        assert_eq!(by_name.user, "root");
        let by_id = resolve("0", Some("0")).expect("uid 0");
        assert_eq!(by_id, by_name);
    }

    #[test]
    fn an_unknown_user_or_group_names_the_field() {
        let (field, message) = resolve("no-such-user-b4", None).unwrap_err();
        assert_eq!(field, "global.user");
        assert!(
            message.contains("\"no-such-user-b4\" is not a user"),
            "{message}"
        );
        let (field, message) = resolve("root", Some("no-such-group-b4")).unwrap_err();
        assert_eq!(field, "global.group");
        assert!(message.contains("is not a group"), "{message}");
        assert_eq!(resolve(" ", None).unwrap_err().0, "global.user");
        assert_eq!(resolve("root", Some("")).unwrap_err().0, "global.group");
    }

    #[test]
    fn a_numeric_id_without_an_entry_is_taken_as_written() {
        let who = resolve("4000000001", Some("4000000002")).expect("bare ids");
        assert_eq!((who.uid, who.gid), (4_000_000_001, 4_000_000_002));
        assert_eq!(who.user, "4000000001");
        assert_eq!(who.group, "4000000002");
    }

    #[test]
    fn the_identity_reads_as_the_start_up_log_line_says() {
        let who = Identity {
            uid: 65534,
            gid: 65534,
            user: "nobody".into(),
            group: "nogroup".into(),
        };
        assert_eq!(
            who.to_string(),
            "user nobody (uid 65534), group nogroup (gid 65534)"
        );
    }
}
