#!/bin/sh
# Installs skiff as a service: the binary, the kubectl/crictl/ctr links, the
# skiff-killall.sh and <service>-uninstall.sh scripts, an environment file and
# a systemd unit (an OpenRC script where systemd is absent). Running it again
# upgrades in place: files that would not change are left as they are.
#
#   INSTALL_SKIFF_BIN=./bin/skiff sh install.sh
#   INSTALL_SKIFF_BIN=./skiff SKIFF_URL=https://10.0.0.1:6443 SKIFF_TOKEN=SK10... sh install.sh
#   INSTALL_SKIFF_BIN=./skiff sh install.sh server --cluster-init --tls-san k8s.example.com
#
# Nothing is downloaded unless INSTALL_SKIFF_URL names a binary to fetch.
#
# Environment (K3s's INSTALL_K3S_* and K3S_* under skiff's names):
#   INSTALL_SKIFF_BIN          the skiff binary to install
#   INSTALL_SKIFF_URL          or a URL to download it from (curl or wget),
#   INSTALL_SKIFF_SHA256         checked against this SHA-256 when given
#   INSTALL_SKIFF_SKIP_DOWNLOAD=true  keep the binary already in the bin dir
#                              (also what happens when neither of the above is set)
#   INSTALL_SKIFF_EXEC         command and flags of the service, split at
#                              blanks, before the script's own arguments;
#                              the command is server, or agent when SKIFF_URL is set
#   INSTALL_SKIFF_NAME         service name: skiff-NAME (default skiff, or skiff-agent)
#   INSTALL_SKIFF_TYPE         systemd Type= (default notify)
#   INSTALL_SKIFF_BIN_DIR      where the binary, links and scripts go (/usr/local/bin)
#   INSTALL_SKIFF_SYSTEMD_DIR  where the unit and its env file go (/etc/systemd/system);
#                              setting it chooses systemd even where OpenRC is found
#   INSTALL_SKIFF_SYMLINK      skip: no kubectl/crictl/ctr links; force: replace
#                              what is there (default: link where the command is missing)
#   INSTALL_SKIFF_SKIP_ENABLE=true   neither enable nor start the service
#   INSTALL_SKIFF_SKIP_START=true    write and enable everything, start nothing
#   INSTALL_SKIFF_FORCE_RESTART=true restart the service even when nothing changed
#   SKIFF_URL, SKIFF_TOKEN, SKIFF_TOKEN_FILE   join a server: an agent service
#   --token/-t, --agent-token, --datastore-endpoint given as flags go into
#                              the env file as SKIFF_TOKEN, SKIFF_AGENT_TOKEN,
#                              SKIFF_DATASTORE_ENDPOINT, never into the unit
#   SKIFF_*, CONTAINERD_*, HTTP(S)_PROXY, NO_PROXY  copied into the env file
#                              (mode 0600), which the service reads
set -eu
umask 022

info() { echo "[INFO]  $*"; }
warn() { echo "[WARN]  $*" >&2; }
fatal() {
    echo "[ERROR] $*" >&2
    exit 1
}

# WORK_DIR holds what is compared before anything is written; TMP_FILE is a
# new file beside its destination until it is renamed into place.
WORK_DIR=
TMP_FILE=
cleanup() {
    if [ -n "${TMP_FILE}" ]; then
        rm -f "${TMP_FILE}"
    fi
    if [ -n "${WORK_DIR}" ]; then
        rm -rf "${WORK_DIR}"
    fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# --- the service's command line ---------------------------------------------

# quote_arg prints one argument single-quoted, for a unit's ExecStart (where %
# and $ are special too) or an OpenRC command_args. Arguments that neither can
# carry reliably are refused.
quote_arg() {
    case "$1" in
        *"'"* | *"\\"* | *'
'*)
            fatal "argument '$1' holds a quote, a backslash or a newline: set it in /etc/skiff/config.yaml instead" ;;
    esac
    printf "'%s'" "$1"
}

# check_path refuses paths that a unit file or a script could not name
# plainly.
check_path() {
    case "$2" in
        /*) ;;
        *) fatal "$1 must be an absolute path, got '$2'" ;;
    esac
    case "$2" in
        *[[:space:]]* | *"'"* | *'"'* | *"\\"* | *'$'* | *'%'* | *'`'*)
            fatal "$1 '$2' holds a blank or a quoting character" ;;
    esac
}

# set_secret exports $1=$3, for the env file: the secret given as flag $2.
set_secret() {
    [ -n "$3" ] || fatal "$2 has an empty value"
    eval "$1=\$3"
    # shellcheck disable=SC2163 # export the variable named by $1
    export "$1"
}

setup_env() {
    # INSTALL_SKIFF_EXEC's words come first, then the script's arguments.
    exec_words=${INSTALL_SKIFF_EXEC:-}
    set -f
    # shellcheck disable=SC2086 # split the flags at blanks, on purpose
    set -- ${exec_words} "$@"
    set +f

    joins_url=false
    case "${1:-}" in
        '' | -*)
            if [ -n "${SKIFF_URL:-}" ]; then
                joins_url=true
                CMD_SKIFF=agent
            else
                CMD_SKIFF=server
            fi
            ;;
        *)
            CMD_SKIFF=$1
            shift
            ;;
    esac
    case "${CMD_SKIFF}" in
        server | agent) ;;
        *) fatal "unknown command '${CMD_SKIFF}' (INSTALL_SKIFF_EXEC or the first argument): server or agent" ;;
    esac
    case "${SKIFF_URL:-}" in
        '' | https://*) ;;
        *) fatal "SKIFF_URL must be an https:// URL, got '${SKIFF_URL}'" ;;
    esac

    DATA_DIR=${SKIFF_DATA_DIR:-}
    EXEC_ARGS=$(quote_arg "${CMD_SKIFF}")
    # Secrets given as flags go into the env file (mode 0600) as the
    # SKIFF_<FLAG> variables skiff reads, not into the unit (mode 0644,
    # readable by every user); a flag beats the environment, as in skiff.
    secret_var=
    prev=
    token_file=false
    for arg in "$@"; do
        if [ -n "${secret_var}" ]; then
            set_secret "${secret_var}" "${prev}" "${arg}"
            secret_var=
            continue
        fi
        case "${arg}" in
            --token | -t) secret_var=SKIFF_TOKEN ;;
            --token=*) set_secret SKIFF_TOKEN --token "${arg#--token=}" ;;
            -t=*) set_secret SKIFF_TOKEN -t "${arg#-t=}" ;;
            -t?*) set_secret SKIFF_TOKEN -t "${arg#-t}" ;;
            --agent-token) secret_var=SKIFF_AGENT_TOKEN ;;
            --agent-token=*) set_secret SKIFF_AGENT_TOKEN --agent-token "${arg#--agent-token=}" ;;
            --datastore-endpoint) secret_var=SKIFF_DATASTORE_ENDPOINT ;;
            --datastore-endpoint=*) set_secret SKIFF_DATASTORE_ENDPOINT --datastore-endpoint "${arg#--datastore-endpoint=}" ;;
            *)
                case "${arg}" in
                    --data-dir=*) DATA_DIR=${arg#--data-dir=} ;;
                    --token-file | --token-file=*) token_file=true ;;
                esac
                if [ "${prev:-}" = --data-dir ]; then
                    DATA_DIR=${arg}
                fi
                EXEC_ARGS="${EXEC_ARGS} $(quote_arg "${arg}")"
                ;;
        esac
        prev=${arg}
    done
    case "${secret_var}" in
        '') ;;
        *) fatal "${prev} needs a value" ;;
    esac
    if [ "${joins_url}" = true ] && [ -z "${SKIFF_TOKEN:-}" ] && [ -z "${SKIFF_TOKEN_FILE:-}" ] && [ "${token_file}" = false ]; then
        fatal "SKIFF_URL is set, so this is an agent, but neither SKIFF_TOKEN nor SKIFF_TOKEN_FILE is"
    fi
    # The uninstall script removes the data dir: it must be a plain absolute
    # path, and not / however spelt (busybox rm has no --preserve-root).
    if [ -n "${DATA_DIR}" ]; then
        check_path "the data dir" "${DATA_DIR}"
        [ "${DATA_DIR}" != / ] || fatal "the data dir cannot be /"
        case "${DATA_DIR}/" in
            *//* | */./* | */../*)
                fatal "the data dir '${DATA_DIR}' holds an empty, '.' or '..' segment: name it plainly, like /var/lib/skiff" ;;
        esac
    fi
    # The env file's values are checked before anything is written.
    for name in $(env_names); do
        check_env_value "${name}"
    done

    if [ -n "${INSTALL_SKIFF_NAME:-}" ]; then
        SYSTEM_NAME=skiff-${INSTALL_SKIFF_NAME}
    elif [ "${CMD_SKIFF}" = server ]; then
        SYSTEM_NAME=skiff
    else
        SYSTEM_NAME=skiff-${CMD_SKIFF}
    fi
    case "${SYSTEM_NAME}" in
        *[!A-Za-z0-9_.-]*) fatal "INSTALL_SKIFF_NAME: '${SYSTEM_NAME}' may hold only letters, digits, '_', '.' and '-'" ;;
    esac

    SYSTEMD_TYPE=${INSTALL_SKIFF_TYPE:-notify}
    case "${SYSTEMD_TYPE}" in
        notify | exec | simple) ;;
        *) fatal "INSTALL_SKIFF_TYPE must be notify, exec or simple, got '${SYSTEMD_TYPE}'" ;;
    esac

    BIN_DIR=${INSTALL_SKIFF_BIN_DIR:-/usr/local/bin}
    check_path INSTALL_SKIFF_BIN_DIR "${BIN_DIR}"
    SYSTEMD_DIR=${INSTALL_SKIFF_SYSTEMD_DIR:-/etc/systemd/system}
    check_path INSTALL_SKIFF_SYSTEMD_DIR "${SYSTEMD_DIR}"

    if [ -n "${INSTALL_SKIFF_SYSTEMD_DIR:-}" ]; then
        INIT=systemd
    elif [ -x /sbin/openrc-run ]; then
        INIT=openrc
    elif command -v systemctl >/dev/null 2>&1; then
        INIT=systemd
    else
        fatal "found neither systemd nor OpenRC to run skiff as a service (set INSTALL_SKIFF_SYSTEMD_DIR to write a systemd unit anyway)"
    fi

    SKIFF_BIN=${BIN_DIR}/skiff
    KILLALL_SH=${BIN_DIR}/skiff-killall.sh
    UNINSTALL_SH=${BIN_DIR}/${SYSTEM_NAME}-uninstall.sh
    if [ "${INIT}" = systemd ]; then
        SERVICE_FILE=${SYSTEMD_DIR}/${SYSTEM_NAME}.service
        ENV_FILE=${SYSTEMD_DIR}/${SYSTEM_NAME}.service.env
        LOGROTATE_FILE=
    else
        SERVICE_FILE=/etc/init.d/${SYSTEM_NAME}
        ENV_FILE=/etc/skiff/${SYSTEM_NAME}.env
        LOGROTATE_FILE=/etc/logrotate.d/${SYSTEM_NAME}
    fi
}

# --- writing files ------------------------------------------------------------

# put_file writes its standard input to $1 with mode $2, unless $1 already
# holds exactly that: a second run changes neither bytes nor modes, nor even
# the directories' times. A new file is written beside the old one,
# unreadable to others until its mode is set, and renamed over it.
put_file() {
    new=${WORK_DIR}/new
    (umask 077 && cat >"${new}")
    if [ -f "$1" ] && [ ! -L "$1" ] && cmp -s "${new}" "$1"; then
        chmod "$2" "$1"
        info "unchanged: $1"
        return
    fi
    replace_file "${new}" "$1" "$2"
    info "wrote $1"
}

# replace_file copies $1 beside $2, sets mode $3 and renames it over $2.
replace_file() {
    TMP_FILE="$2.tmp.$$"
    (umask 077 && cp "$1" "${TMP_FILE}")
    chmod "$3" "${TMP_FILE}"
    mv -f "${TMP_FILE}" "$2"
    TMP_FILE=
}

# --- the binary ---------------------------------------------------------------

download() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL -o "$1" "$2" || fatal "downloading $2 failed"
    elif command -v wget >/dev/null 2>&1; then
        wget -qO "$1" "$2" || fatal "downloading $2 failed"
    else
        fatal "INSTALL_SKIFF_URL needs curl or wget"
    fi
}

# check_binary_source picks where the binary comes from (BIN_SOURCE: bin,
# url or keep), refusing what cannot work before anything is written.
check_binary_source() {
    if [ "${INSTALL_SKIFF_SKIP_DOWNLOAD:-}" = true ]; then
        BIN_SOURCE=keep
    elif [ -n "${INSTALL_SKIFF_BIN:-}" ] && [ -n "${INSTALL_SKIFF_URL:-}" ]; then
        fatal "set INSTALL_SKIFF_BIN or INSTALL_SKIFF_URL, not both"
    elif [ -n "${INSTALL_SKIFF_BIN:-}" ]; then
        [ -f "${INSTALL_SKIFF_BIN}" ] || fatal "INSTALL_SKIFF_BIN: ${INSTALL_SKIFF_BIN} is not a file"
        BIN_SOURCE=bin
    elif [ -n "${INSTALL_SKIFF_URL:-}" ]; then
        BIN_SOURCE=url
    else
        BIN_SOURCE=keep
    fi
    if [ "${BIN_SOURCE}" = keep ] && [ ! -x "${SKIFF_BIN}" ]; then
        fatal "no skiff binary: set INSTALL_SKIFF_BIN=/path/to/skiff (or INSTALL_SKIFF_URL=URL); ${SKIFF_BIN} does not exist"
    fi
}

install_binary() {
    if [ "${BIN_SOURCE}" = keep ]; then
        info "keeping ${SKIFF_BIN}"
        return
    fi
    mkdir -p "${BIN_DIR}"
    if [ "${BIN_SOURCE}" = bin ]; then
        src=${INSTALL_SKIFF_BIN}
    else
        src=${WORK_DIR}/skiff
        info "downloading ${INSTALL_SKIFF_URL}"
        (umask 077 && download "${src}" "${INSTALL_SKIFF_URL}")
        if [ -n "${INSTALL_SKIFF_SHA256:-}" ]; then
            sum=$(sha256sum "${src}")
            sum=${sum%% *}
            [ "${sum}" = "${INSTALL_SKIFF_SHA256}" ] || fatal "INSTALL_SKIFF_SHA256: ${INSTALL_SKIFF_URL} has SHA-256 ${sum}, not ${INSTALL_SKIFF_SHA256}"
        else
            warn "INSTALL_SKIFF_SHA256 is not set: the download is not checked"
        fi
    fi
    if [ -f "${SKIFF_BIN}" ] && [ ! -L "${SKIFF_BIN}" ] && cmp -s "${src}" "${SKIFF_BIN}"; then
        chmod 0755 "${SKIFF_BIN}"
        info "unchanged: ${SKIFF_BIN}"
        return
    fi
    TMP_FILE="${SKIFF_BIN}.tmp.$$"
    (umask 077 && cp "${src}" "${TMP_FILE}")
    chmod 0755 "${TMP_FILE}"
    "${TMP_FILE}" --version >/dev/null 2>&1 || fatal "the new skiff binary does not run on this machine (another architecture?)"
    mv -f "${TMP_FILE}" "${SKIFF_BIN}"
    TMP_FILE=
    info "installed ${SKIFF_BIN}"
}

# create_links points kubectl, crictl and ctr at skiff, which runs each tool
# when started under its name.
create_links() {
    [ "${INSTALL_SKIFF_SYMLINK:-}" = skip ] && return
    for cmd in kubectl crictl ctr; do
        link=${BIN_DIR}/${cmd}
        if [ -L "${link}" ] && [ "$(readlink "${link}")" = skiff ]; then
            continue
        fi
        if [ "${INSTALL_SKIFF_SYMLINK:-}" != force ]; then
            if [ -e "${link}" ] || [ -L "${link}" ]; then
                info "not linking ${link}: it exists (INSTALL_SKIFF_SYMLINK=force replaces it)"
                continue
            fi
            if other=$(command -v "${cmd}" 2>/dev/null); then
                info "not linking ${link}: ${cmd} is ${other} (INSTALL_SKIFF_SYMLINK=force links anyway)"
                continue
            fi
        fi
        rm -f "${link}"
        ln -s skiff "${link}"
        info "linked ${link} -> skiff"
    done
}

# --- killall and uninstall scripts ------------------------------------------

create_killall() {
    if [ "${INIT}" = systemd ]; then
        stop_services="if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    for unit in '${SYSTEMD_DIR}'/skiff*.service; do
        [ -f \"\${unit}\" ] && systemctl stop \"\${unit##*/}\"
    done
fi"
    else
        stop_services="for service in /etc/init.d/skiff*; do
    [ -x \"\${service}\" ] && \"\${service}\" stop
done"
    fi
    # skiff killall reads SKIFF_DATA_DIR: the service's data dir, when it is
    # not the default, unless the caller names another.
    data_dir=
    if [ -n "${DATA_DIR}" ]; then
        data_dir="SKIFF_DATA_DIR=\${SKIFF_DATA_DIR:-'${DATA_DIR}'}
export SKIFF_DATA_DIR
"
    fi
    put_file "${KILLALL_SH}" 0755 <<EOF
#!/bin/sh
# Written by skiff's install.sh. Stops the skiff services, then every skiff
# server, agent, containerd and pod on this host, and undoes their mounts,
# network links, routes and firewall rules (skiff killall). The cluster's
# data is kept: starting the service again resumes where it was.
[ "\$(id -u)" -eq 0 ] || exec sudo --preserve-env=SKIFF_DATA_DIR "\$0" "\$@"
${stop_services}
${data_dir}exec '${SKIFF_BIN}' killall "\$@"
EOF
}

create_uninstall() {
    if [ "${INIT}" = systemd ]; then
        disable_service="if command -v systemctl >/dev/null 2>&1; then
    systemctl disable '${SYSTEM_NAME}' >/dev/null 2>&1 || true
    if [ -d /run/systemd/system ]; then
        systemctl reset-failed '${SYSTEM_NAME}' >/dev/null 2>&1 || true
        systemctl daemon-reload || failed 'systemctl daemon-reload'
    fi
fi
remove '${SERVICE_FILE}' '${ENV_FILE}'
if ls '${SYSTEMD_DIR}'/skiff*.service >/dev/null 2>&1; then
    others=true
fi"
    else
        disable_service="if command -v rc-update >/dev/null 2>&1; then
    rc-update delete '${SYSTEM_NAME}' default >/dev/null 2>&1 || true
fi
remove '${SERVICE_FILE}' '${ENV_FILE}' '${LOGROTATE_FILE}'
if ls /etc/init.d/skiff* >/dev/null 2>&1; then
    others=true
fi"
    fi
    put_file "${UNINSTALL_SH}" 0755 <<EOF
#!/bin/sh
# Written by skiff's install.sh. Stops and removes the ${SYSTEM_NAME} service
# and what install.sh wrote for it; when no other skiff service is left, also
# the binary, its links and scripts, and what the node left behind: its data
# dir (SKIFF_DATA_DIR), /etc/skiff and /var/lib/kubelet.
[ "\$(id -u)" -eq 0 ] || exec sudo --preserve-env=SKIFF_DATA_DIR "\$0" "\$@"
set -u
SKIFF_DATA_DIR=\${SKIFF_DATA_DIR:-${DATA_DIR:-/var/lib/skiff}}
rc=0
failed() {
    echo "skiff uninstall: \$* failed" >&2
    rc=1
}
# rm stays on the file system it starts on where it can (GNU rm; busybox
# rm cannot).
one_fs=
if rm -rf --one-file-system /nonexistent/skiff-uninstall-probe 2>/dev/null; then
    one_fs=--one-file-system
fi
remove() {
    for path in "\$@"; do
        if [ -e "\${path}" ] || [ -L "\${path}" ]; then
            echo "removing \${path}"
            rm -rf \${one_fs:+"\${one_fs}"} -- "\${path}" || failed "removing \${path}"
        fi
    done
}
# remove_unmounted removes each dir unless something is still mounted under
# it: a mount killall could not undo (a pod's CSI or NFS volume under
# /var/lib/kubelet) may be someone else's data. A dir that is a mount point
# itself (a disk of its own) is emptied and kept.
remove_unmounted() {
    for path in "\$@"; do
        if [ ! -e "\${path}" ] && [ ! -L "\${path}" ]; then
            continue
        fi
        if ! mounted=\$(awk -v d="\${path%/}/" 'index(\$2, d) == 1 { m = m (m == "" ? "" : " ") \$2 } END { print m }' /proc/self/mounts); then
            echo "skiff uninstall: keeping \${path}: cannot read /proc/self/mounts" >&2
            rc=1
        elif [ -n "\${mounted}" ]; then
            echo "skiff uninstall: keeping \${path}: still mounted under it: \${mounted}" >&2
            rc=1
        else
            echo "removing \${path}"
            if ! rm -rf \${one_fs:+"\${one_fs}"} -- "\${path}"; then
                if [ -d "\${path}" ] && [ -z "\$(ls -A "\${path}")" ] &&
                    awk -v p="\${path%/}" '\$2 == p { found = 1 } END { exit !found }' /proc/self/mounts; then
                    echo "emptied \${path}; it is a mount point, so it stays"
                else
                    failed "removing \${path}"
                fi
            fi
        fi
    done
}

# Stop the services, the node's processes and pods, undo its host changes.
'${KILLALL_SH}' || failed '${KILLALL_SH}'

others=false
${disable_service}
trap "rm -f '${UNINSTALL_SH}'" EXIT
if [ "\${others}" = true ]; then
    echo "other skiff services are installed: keeping the skiff binary and the node's data"
    exit "\${rc}"
fi

for cmd in kubectl crictl ctr; do
    link='${BIN_DIR}'/\${cmd}
    if [ -L "\${link}" ] && [ "\$(readlink "\${link}")" = skiff ]; then
        remove "\${link}"
    fi
done

# The data dir, /var/lib/kubelet and /run/skiff go only when nothing is
# mounted under them; the data dir only when it is a plain path other than /.
case "\${SKIFF_DATA_DIR}/" in
    *//* | */./* | */../* | *[[:space:]\\\\]*)
        echo "skiff uninstall: keeping SKIFF_DATA_DIR='\${SKIFF_DATA_DIR}': not a plain absolute path other than /" >&2
        rc=1
        ;;
    /?*) remove_unmounted "\${SKIFF_DATA_DIR}" ;;
    *)
        echo "skiff uninstall: keeping SKIFF_DATA_DIR='\${SKIFF_DATA_DIR}': not an absolute path" >&2
        rc=1
        ;;
esac
remove_unmounted /var/lib/kubelet /run/skiff
remove /etc/skiff '${SKIFF_BIN}' '${KILLALL_SH}'
exit "\${rc}"
EOF
}

# --- the service ----------------------------------------------------------------

# create_env_file keeps the variables the service reads, the token among
# them: mode 0600, never in the unit. Sorted, so that the same environment
# writes the same bytes.
create_env_file() {
    mkdir -p "$(dirname "${ENV_FILE}")"
    lines=$(env_lines)
    printf '%s\n' "${lines}" | put_file "${ENV_FILE}" 0600
}

env_lines() {
    echo "# Written by skiff's install.sh: the environment of the ${SYSTEM_NAME} service."
    for name in $(env_names); do
        value=
        eval "value=\${${name}}"
        printf "%s='%s'\n" "${name}" "${value}"
    done
}

# env_names lists, sorted, the variables that go into the env file.
env_names() {
    awk 'BEGIN { for (k in ENVIRON) print k }' | grep -E '^(SKIFF_|CONTAINERD_|HTTP_PROXY$|HTTPS_PROXY$|NO_PROXY$|http_proxy$|https_proxy$|no_proxy$)' | grep -v '[^A-Za-z0-9_]' | LC_ALL=C sort || true
}

# check_env_value refuses a variable the env file cannot carry.
check_env_value() {
    value=
    eval "value=\${$1}"
    case "${value}" in
        *"'"* | *"\\"* | *'
'*)
            fatal "$1 holds a quote, a backslash or a newline, which an environment file cannot carry: set it in /etc/skiff/config.yaml instead" ;;
    esac
}

create_systemd_unit() {
    mkdir -p "${SYSTEMD_DIR}"
    if [ "${CMD_SKIFF}" = agent ]; then
        what="node (agent)"
    else
        what="server"
    fi
    put_file "${SERVICE_FILE}" 0644 <<EOF
# Written by skiff's install.sh; running it again rewrites this file.
[Unit]
Description=skiff Kubernetes ${what}
Documentation=https://github.com/skiffkube/skiff
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=${SYSTEMD_TYPE}
NotifyAccess=main
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-/etc/sysconfig/%N
EnvironmentFile=-${ENV_FILE}
# Stopping the service stops skiff only: the pods keep running (containerd's
# shims are in this cgroup), and skiff-killall.sh stops them.
KillMode=process
Delegate=yes
User=root
# The kubelet and containerd create cgroups, files and processes for every
# pod: the node needs limits far above a login session's. Unlimited TasksMax
# and NPROC leave the accounting to the pods' own cgroups.
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
# A first start unpacks the payload and may import images: no start timeout;
# skiff says READY=1 itself once the node is Ready.
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStart=${SKIFF_BIN} ${EXEC_ARGS}
EOF
}

create_openrc_script() {
    log_file=/var/log/${SYSTEM_NAME}.log
    put_file "${SERVICE_FILE}" 0755 <<EOF
#!/sbin/openrc-run
# Written by skiff's install.sh; running it again rewrites this file.
description="skiff Kubernetes ${CMD_SKIFF}"

depend() {
    after network-online
    want cgroups
}

supervisor=supervise-daemon
name=${SYSTEM_NAME}
command='${SKIFF_BIN}'
command_args="${EXEC_ARGS}"
output_log=${log_file}
error_log=${log_file}
pidfile=/var/run/${SYSTEM_NAME}.pid
respawn_delay=5
respawn_max=0
rc_ulimit="-n 1048576 -u unlimited -c unlimited"

set -o allexport
if [ -f /etc/environment ]; then . /etc/environment; fi
if [ -f '${ENV_FILE}' ]; then . '${ENV_FILE}'; fi
set +o allexport
EOF
    mkdir -p "$(dirname "${LOGROTATE_FILE}")"
    put_file "${LOGROTATE_FILE}" 0644 <<EOF
${log_file} {
	missingok
	notifempty
	copytruncate
}
EOF
}

installed_sums() {
    cat "${SKIFF_BIN}" "${SERVICE_FILE}" "${ENV_FILE}" 2>/dev/null | cksum
}

start_service() {
    if [ "${INSTALL_SKIFF_SKIP_ENABLE:-}" = true ]; then
        info "not enabling or starting ${SYSTEM_NAME} (INSTALL_SKIFF_SKIP_ENABLE=true)"
        return
    fi
    if [ "${INIT}" = systemd ]; then
        systemctl enable "${SERVICE_FILE}" >/dev/null 2>&1 || fatal "systemctl enable ${SERVICE_FILE} failed"
        info "enabled ${SYSTEM_NAME}"
        if [ ! -d /run/systemd/system ]; then
            info "systemd is not running here: ${SYSTEM_NAME} starts at the next boot"
            return
        fi
        systemctl daemon-reload
    else
        rc-update add "${SYSTEM_NAME}" default >/dev/null
        info "enabled ${SYSTEM_NAME} in the default runlevel"
    fi
    if [ "${INSTALL_SKIFF_SKIP_START:-}" = true ]; then
        info "not starting ${SYSTEM_NAME} (INSTALL_SKIFF_SKIP_START=true)"
        return
    fi
    if [ "${SUMS_BEFORE}" = "$(installed_sums)" ] && [ "${INSTALL_SKIFF_FORCE_RESTART:-}" != true ]; then
        info "nothing changed: not restarting ${SYSTEM_NAME} (INSTALL_SKIFF_FORCE_RESTART=true does)"
        return
    fi
    info "starting ${SYSTEM_NAME}"
    if [ "${INIT}" = systemd ]; then
        systemctl restart "${SYSTEM_NAME}"
    else
        "${SERVICE_FILE}" restart
    fi
}

[ "$(id -u)" -eq 0 ] || fatal "run install.sh as root"
setup_env "$@"
check_binary_source
WORK_DIR=$(mktemp -d)
SUMS_BEFORE=$(installed_sums)
install_binary
create_links
create_killall
create_uninstall
create_env_file
if [ "${INIT}" = systemd ]; then
    create_systemd_unit
else
    create_openrc_script
fi
start_service
