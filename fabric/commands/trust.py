"""`fabric trust ADDRESS:PORT --ca-hash sha256:...`: pin a fabric's cluster CA for a client on
another machine, as `fabric host join` pins it: fetched from the join port (PORT + 1) and kept
only if its public key hash is the one given. Written to ``<state>/ca.pem``, which the client
then trusts alone for the API's HTTPS (fabric.client.tls)."""

from __future__ import annotations

from pathlib import Path

import anyio
import click

from fabric.commands.client import state_dir_option, user_errors


@click.command()
@click.argument("address")
@click.option(
    "--ca-hash", required=True, help="The CA's public key hash, sha256:<hex> (`fabric token create`)."
)
@state_dir_option
def trust(address: str, ca_hash: str, state_dir: Path) -> None:
    """Trust the cluster CA of the fabric whose --listen is ADDRESS:PORT, for the API's HTTPS.

    Put the fabric's API URL in <state>/api and its token in <state>/token beside it.
    """
    from fabric.client.tls import CA_FILE
    from fabric.cluster.ca import CAError, check_hash_format
    from fabric.cluster.join import JoinRefused, fetch_ca
    from fabric.cluster.node import split_address

    with user_errors(JoinRefused, CAError, ValueError, OSError):
        host, port = split_address(address)
        pem = anyio.run(fetch_ca, host, port + 1, check_hash_format(ca_hash))
        state_dir.mkdir(parents=True, exist_ok=True)
        (state_dir / CA_FILE).write_bytes(pem)
        click.echo(f"trusting the cluster CA {ca_hash.strip().lower()} in {state_dir / CA_FILE}")
