"""`bulwark render`: every config file of every host, for auditors, with no connection."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import click

from bulwark.audit import audit_secrets, write_report, write_zone
from bulwark.bundle import SigningKey, finish_bundle
from bulwark.checks import check_files
from bulwark.cli.audit import signing_options
from bulwark.htmlreport import write_html_report
from bulwark.inventory import load_topology
from bulwark.registry import describe_not_deployed
from bulwark.render import (
    RenderedFile,
    check_output_dir,
    host_trees_written_aside,
    render_host_configs,
    replaced_output_dir,
)


@click.command("render")
@click.argument("inventory", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for HOST/etc/... and manifest.json (a previous render there is replaced).",
)
@click.option(
    "--check/--no-check",
    default=True,
    show_default=True,
    help="Run each daemon's own checker (sshd -t, apt-config, ...) where it is installed.",
)
@signing_options
def render(inventory: str, out: Path, check: bool, sign: SigningKey | None) -> None:
    """Render every file every role would write on every host of INVENTORY.

    Beside the HOST/ trees and manifest.json: ports.json (the port matrix, host x port x
    exposure) and report.md (the port matrix, the TLS mode of every service, every encrypted
    volume); dns.zone (the DNS records to publish, as `bulwark dns` prints them: without the
    vault's key, those made from its keys are left out); facts.json (what `bulwark audit diff`
    compares); with --sign, manifest.json.sig and allowed_signers.

    Secrets appear only as <secret:NAME sha256:XXXXXXXX>. The output is byte-identical from
    run to run for the same inventory and vault. Exit code 1 if a checker rejects a file.
    """
    topology = load_topology(inventory)
    check_output_dir(out)
    if waiting := describe_not_deployed(topology):
        click.echo(f"note: {waiting}", err=True)
    secrets = audit_secrets(topology)
    files: list[RenderedFile] = []
    # The host trees are written by child processes, a quarter of the hosts each, while the
    # next hosts are rendered and the reports and checks run (see host_trees_written_aside).
    batch = max(1, len(topology.hosts) // 4)
    # A failed render leaves a previous one as it was; what is left of it once every host is
    # written (its unchanged host trees are moved into the new one) is deleted.
    with replaced_output_dir(out) as previous:
        with host_trees_written_aside(out, previous.tree) as write:
            with click.progressbar(topology.hosts, label="rendering", file=sys.stderr) as hosts:
                unwritten: list[RenderedFile] = []
                for number, host in enumerate(hosts, 1):
                    unwritten.extend(render_host_configs(topology, host, secrets))
                    if number % batch == 0 or number == len(topology.hosts):
                        write(unwritten)
                        files.extend(unwritten)
                        unwritten = []
            write_report(topology, out)
            write_zone(topology, secrets, out)
            write_html_report(topology, files, out)
            results = check_files(files) if check else []
        previous.discard()
        signed = finish_bundle(topology, files, out, sign)  # last: hashes what is written
    if signed:
        click.echo(signed)
    click.echo(f"rendered {len(files)} files for {len(topology.hosts)} hosts into {out}")
    if not check:
        return
    for result in results:
        if result.status == "failed":
            click.echo(
                f"FAILED {result.host}:{result.path} ({result.tool}): {result.detail}", err=True
            )
    counts = Counter(result.status for result in results)
    skipped = sorted({result.tool for result in results if result.status == "skipped"})
    click.echo(
        f"checks: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped"
        + (f" (not installed: {', '.join(skipped)})" if skipped else "")
    )
    if counts["failed"]:
        raise SystemExit(1)
