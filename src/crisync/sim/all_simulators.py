"""`crisync sim all`: a whole simulated site on 127.0.0.1 and a configuration for it.

Elements and Unicat as sources, a Pure that already holds what a site's Pure holds (see
sim.site), and an MQTT broker; their clocks follow real time. The configuration file and
the environment file with its secrets are written into one directory, ready for
`crisync check-config|plan|once|run --config`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from crisync.config.model import MqttConfig
from crisync.handlers.pure.sim import PureSimulator
from crisync.listener.elements.sim import ElementsSimulator
from crisync.listener.unicat.sim import UnicatSimulator
from crisync.sim.broker import TrialBroker, trial_broker
from crisync.sim.cli import (
    ELEMENTS_PASSWORD,
    ELEMENTS_USER,
    PURE_API_KEY,
    pure_organisations,
    stop_signals,
)
from crisync.sim.server import DEFAULT_PORTS, serve
from crisync.sim.site import populate_site

# Fixed, so that `crisync sim change|add|delete` finds them without being told.
METRICS_PORT = 9661  # beside a real daemon's 9660
UNICAT_PROJECT = "5c1e7c5a-4b7e-4d0f-9a51-6d2f8b0c3e11"
UNICAT_API_KEY = "unicat-secret"
TOPIC_PREFIX = "crisync-sim"  # not the production crisync/
CONFIG_NAME = "crisync.toml"
ENV_NAME = "crisync.env"
STATE_NAME = "state.db"


@dataclass(frozen=True)
class SiteOptions:
    directory: Path
    elements_port: int = DEFAULT_PORTS["elements"]
    pure_port: int = DEFAULT_PORTS["pure"]
    unicat_port: int = DEFAULT_PORTS["unicat"]
    objects: int = 50
    records: int = 30
    seed: int = 1
    mqtt: MqttConfig | None = None  # None: localhost:1883, else a private mosquitto
    # Pure's throttling, simulated (429 with Retry-After past it) and paced to by the config
    pure_rate_limit: int | None = None  # requests per second
    pure_hourly_quota: int | None = None


@dataclass(frozen=True)
class SiteUrls:
    elements: str  # up to and including the API version
    pure: str  # ending in /ws/api
    unicat: str  # the origin
    organisation: str  # managing organisation of what crisync creates in Pure


def run_site(options: SiteOptions) -> int:
    asyncio.run(serve_site(options))
    return 0


async def serve_site(options: SiteOptions, ready: asyncio.Event | None = None) -> None:
    """Until SIGINT or SIGTERM; `ready` is set once the files are written (for the tests)."""
    elements = ElementsSimulator(
        objects=options.objects,
        seed=options.seed,
        username=ELEMENTS_USER,
        password=ELEMENTS_PASSWORD,
        wall_clock=True,
    )
    pure = PureSimulator(
        api_key=PURE_API_KEY, seed=options.seed, organizations=pure_organisations(options.objects)
    )
    site = populate_site(pure, elements, seed=options.seed)
    throttled = options.pure_rate_limit is not None or options.pure_hourly_quota is not None
    if throttled:
        pure.throttle(per_second=options.pure_rate_limit, hourly_quota=options.pure_hourly_quota)
    unicat = UnicatSimulator(
        project=UNICAT_PROJECT,
        api_key=UNICAT_API_KEY,
        records=options.records,
        seed=options.seed,
        wall_clock=True,
    )
    options.directory.mkdir(parents=True, exist_ok=True)
    async with (
        stop_signals() as stopped,
        serve(elements.app(), options.elements_port) as elements_origin,
        serve(pure.app(), options.pure_port) as pure_origin,
        serve(unicat.app(), options.unicat_port) as unicat_origin,
    ):
        with trial_broker(options.directory, options.mqtt) as broker:
            urls = SiteUrls(
                elements=f"{elements_origin}/secure-api/v5.5",
                pure=f"{pure_origin}/ws/api",
                unicat=unicat_origin,
                organisation=pure.organization_uuids[0],
            )
            config = write_site_files(options.directory, urls, broker, options)
            print(f"Elements API simulator  {urls.elements}")
            print(
                f"  user {ELEMENTS_USER!r}, password {ELEMENTS_PASSWORD!r}; "
                f"{len(elements.object_ids('user'))} users, "
                f"{len(elements.object_ids('publication'))} publications"
            )
            print(f"Pure API simulator      {urls.pure}")
            print(f"  api-key {PURE_API_KEY!r}; populated as a site's Pure:")
            for line in site.lines():
                print(line)
            if throttled:
                print(
                    f"  throttled: {options.pure_rate_limit or 'any'} requests/s, hourly quota "
                    f"{options.pure_hourly_quota or 'none'} (429 with Retry-After beyond them)"
                )
            print(f"Unicat API simulator    {urls.unicat}")
            print(
                f"  project {UNICAT_PROJECT}, api-key {UNICAT_API_KEY!r}; "
                f"{len(unicat.record_gids())} records"
            )
            watch = broker.watch_command(TOPIC_PREFIX)
            print(f"MQTT broker             {broker.url if watch else '(none: outbox only)'}")
            print()
            publications = elements.object_ids("publication")
            steps = _next_steps(
                config,
                watch,
                publications[:2],
                elements_origin if options.elements_port != DEFAULT_PORTS["elements"] else "",
                unicat_origin if options.unicat_port != DEFAULT_PORTS["unicat"] else "",
            )
            for line in steps:
                print(line)
            if ready is not None:
                ready.set()
            await stopped.wait()


def write_site_files(
    directory: Path, urls: SiteUrls, broker: TrialBroker, options: SiteOptions
) -> Path:
    """The configuration, the secrets' environment file beside it, and a fresh state: the
    simulators start a new world each time, which an old state database would not match."""
    for leftover in (STATE_NAME, f"{STATE_NAME}-wal", f"{STATE_NAME}-shm"):
        (directory / leftover).unlink(missing_ok=True)
    config = directory / CONFIG_NAME
    config.write_text(site_config(directory / STATE_NAME, urls, broker, options), encoding="utf-8")
    secrets = directory / ENV_NAME
    secrets.touch(mode=0o600)
    secrets.chmod(0o600)  # an older file keeps its mode otherwise
    secrets.write_text(
        f"CRISYNC_ELEMENTS_PASSWORD={ELEMENTS_PASSWORD}\n"
        f"CRISYNC_PURE_API_KEY={PURE_API_KEY}\n"
        f"CRISYNC_UNICAT_API_KEY={UNICAT_API_KEY}\n",
        encoding="utf-8",
    )
    return config


def site_config(state: Path, urls: SiteUrls, broker: TrialBroker, options: SiteOptions) -> str:
    limits = "".join(
        f"{key} = {value}\n"
        for key, value in (
            ("rate_limit", options.pure_rate_limit),
            ("hourly_quota", options.pure_hourly_quota),
        )
        if value is not None
    )
    if limits:
        limits = "# The simulated Pure's own limits: crisync paces to them.\n" + limits
    mqtt = (
        f'[mqtt]\nurl = "{broker.url}"\ntopic_prefix = "{TOPIC_PREFIX}"\n'
        f'client_id = "{TOPIC_PREFIX}"\npersistent_session = false\n\n'
        '[commands]\nallow = ["retry", "resync"]\n\n'
        if broker.answers
        else ""
    )
    return f"""\
# Written by `crisync sim all` for its simulators; secrets are in {ENV_NAME} beside it.
[state]
path = "{state}"

[daemon]
log_format = "console"

[elements]
url = "{urls.elements}"
username = "{ELEMENTS_USER}"
poll_interval = 5
request_gap = 0.02
lookback = 30

[unicat]
url = "{urls.unicat}"
project = "{UNICAT_PROJECT}"
definitions = ["person", "publication"]
poll_interval = 5

[pure]
url = "{urls.pure}"
managing_organization = "{urls.organisation}"
{limits}
{mqtt}[metrics]
port = {METRICS_PORT}

[mappings.unicat.person]
pure_type = "persons"
[mappings.unicat.person.properties]
"name.firstName" = {{ from = "fields.firstname" }}
"name.lastName" = {{ from = "fields.lastname", required = true }}

[mappings.unicat.publication]
pure_type = "research-outputs"
[mappings.unicat.publication.properties]
typeDiscriminator = {{ value = "OtherContribution" }}
"title.value" = {{ from = "fields.title", required = true }}
"type.uri" = {{ value = "/dk/atira/pure/researchoutput/researchoutputtypes/othercontribution/other" }}
"category.uri" = {{ value = "/dk/atira/pure/researchoutput/category/research" }}
"language.uri" = {{ value = "/dk/atira/pure/core/languages/en_GB" }}
contributors = {{ value = [] }}
managingOrganization = {{ fallback = "managing-organization" }}
"publicationStatuses.0.publicationStatus.uri" = {{ value = "/dk/atira/pure/researchoutput/status/published" }}
"""  # noqa: E501 - TOML lines as an operator writes them


def _next_steps(
    config: Path,
    watch: str | None,
    examples: list[int],
    elements_origin: str,
    unicat_origin: str,
) -> list[str]:
    """The commands to try next; an origin is given where it is not the default one."""
    env = config.parent / ENV_NAME
    changed, deleted = [*examples, 1, 2][:2]
    on_elements = f" --url {elements_origin}" if elements_origin else ""
    on_unicat = f" --url {unicat_origin}" if unicat_origin else ""
    lines = [
        f"Configuration: {config}",
        f"Its secrets:   {env}",
        "",
        "In another shell (Ctrl-C here stops the simulators):",
        f"  set -a; . {env}; set +a",
        f"  crisync check-config --config {config}",
        f"  crisync plan --config {config}",
        f"  crisync run --config {config}",
        f"  crisync sim change elements publication {changed} --title 'A new title'{on_elements}",
        f"  crisync sim delete elements publication {deleted}{on_elements}",
        f"  crisync sim add unicat person --set firstname=Ada --set lastname=Lovelace{on_unicat}",
        f"  curl -s http://127.0.0.1:{METRICS_PORT}/metrics   # while crisync runs",
    ]
    if watch is not None:
        lines.append(f"  {watch}")
    return lines
