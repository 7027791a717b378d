"""`smartcity alerts`: evaluate the alert rules on a schedule and deliver the messages.

smartcity alerts [--rules FILE] [--once]       run the evaluator (every alerts.interval_s)
smartcity alerts check FILE                    validate a rules file and its templates
smartcity alerts test --rule NAME [--commune INSEE]
                                               send a test message through the rule's channel
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from alerts.engine import Evaluator
from alerts.messages import TemplateError, Templates
from alerts.rules import RulesError, load_rules
from alerts.service import build_evaluator, run_options
from alerts.topology import Topology, TopologyError
from sensors.communes import CommuneRegistry, RegistryError
from smartcity.commands.stopping import stop_on_signals
from smartcity.settings import Settings
from storage import open_store

log = logging.getLogger("smartcity.alerts")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `alerts` sub-command and its `check` and `test` actions."""
    parser = subparsers.add_parser(
        "alerts",
        help="evaluate alert rules and deliver messages (email webhooks, SMTP)",
        description="Without ACTION: evaluate the alert rules against the store on a schedule, and "
        "deliver the messages through each commune's webhook or SMTP server (--once: a single "
        "evaluation). Rules: docs/alerts.md.",
    )
    parser.add_argument(
        "--rules", metavar="FILE", type=Path, help="rules file (default: the alerts.rules_file setting)"
    )
    parser.add_argument(
        "--once", action="store_true", help="evaluate once, attempt the deliveries due, and exit"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=False)
    check = actions.add_parser("check", help="validate a rules file, its templates and topology, and exit")
    check.add_argument("file", type=Path, help="the rules file to check")
    test = actions.add_parser("test", help="send a test message through a rule's channel")
    test.add_argument("--rule", required=True, help="name of the rule")
    test.add_argument("--commune", metavar="INSEE", help="commune to send for (default: the rule's first)")
    test.add_argument("--rules", dest="test_rules", metavar="FILE", type=Path, help="rules file")
    receive = actions.add_parser(
        "receive",
        help="run a local webhook receiver that verifies signatures and prints messages (demo, tests)",
    )
    receive.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    receive.add_argument("--port", type=int, default=8099, help="port to listen on (default 8099)")
    receive.add_argument(
        "--secret-env",
        action="append",
        metavar="NAME",
        help="environment variable holding a webhook secret; repeat for several communes "
        "(default SMARTCITY_WEBHOOK_SECRET)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the sub-command."""
    try:
        registry = CommuneRegistry.load(settings.communes_file)
    except RegistryError as exc:
        print(f"smartcity alerts: {exc}", file=sys.stderr)
        return 2
    if args.action == "check":
        return _check(args.file, registry, settings)
    if args.action == "receive":
        return _receive(args)
    path = getattr(args, "test_rules", None) or args.rules
    try:
        evaluator = build_evaluator(settings.alerts, None, registry, rules_file=path)
    except ValueError as exc:  # rules, templates, topology, or an unreadable state file
        print(f"smartcity alerts: {exc}", file=sys.stderr)
        return 2
    # A test message needs no store (and a running evaluator may hold the DuckDB file).
    store = open_store(settings.store) if args.action is None else None
    evaluator.store = store
    for name in evaluator.rules.missing_secrets():
        log.warning("environment variable %s is not set: messages for its channel wait in the outbox", name)
    try:
        if args.action == "test":
            return _test(args, evaluator)
        return _evaluate(args, evaluator, settings)
    finally:
        evaluator.outbox.close()
        if store is not None:
            store.close()


def _check(path: Path, registry: CommuneRegistry, settings: Settings) -> int:
    try:
        rules = load_rules(path, registry)
        Templates(rules.defaults.templates_dir or settings.alerts.templates_dir)
        topology = Topology.load(rules.defaults.topology) if rules.defaults.topology else None
    except (RulesError, TemplateError, TopologyError) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    communes = sorted({c for r in rules.rules for c in (registry.codes if r.communes == "*" else r.communes)})
    print(f"{path}: valid: {len(rules.rules)} rule(s) covering {len(communes)} commune(s)")
    for rule in rules.rules:
        print(f"  {rule.name}: {rule.condition} on {rule.source_measurement} ({rule.severity})")
    if topology is not None:
        print(f"  topology: {len(topology)} device link(s) from {rules.defaults.topology}")
    missing = rules.missing_secrets()
    if missing:
        print(f"  warning: environment variable(s) not set here: {', '.join(missing)}")
    return 0


def _receive(args: argparse.Namespace) -> int:
    import os

    from alerts.receiver import SignedWebhookReceiver, print_message

    names = args.secret_env or ["SMARTCITY_WEBHOOK_SECRET"]
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        print(
            f"smartcity alerts receive: environment variable(s) not set: {', '.join(missing)}",
            file=sys.stderr,
        )
        return 2
    receiver = SignedWebhookReceiver(
        [os.environ[n] for n in names], print_message, host=args.host, port=args.port
    )
    print(
        f"receiving signed alert messages on http://{args.host}:{receiver.port}/ (Ctrl-C to stop)", flush=True
    )
    signal.signal(signal.SIGTERM, lambda signum, frame: threading.Thread(target=receiver.stop).start())
    try:
        receiver.serve_forever()
    except KeyboardInterrupt:
        receiver.stop()
    return 0


def _test(args: argparse.Namespace, evaluator: Evaluator) -> int:
    try:
        envelopes = evaluator.send_test(args.rule, args.commune)
    except KeyError as exc:
        print(f"smartcity alerts test: {exc.args[0]}", file=sys.stderr)
        return 2
    ids = {e.id for e in envelopes}
    results = [(e, a) for e, a in evaluator.outbox.deliver_due(evaluator.clock()) if e.id in ids]
    for envelope, attempt in results:
        if attempt.ok:
            print(f"test message {envelope.id} delivered to {attempt.target}")
        else:
            kept = (
                "kept in the outbox for retries" if attempt.retryable else "refused for good (outbox failed/)"
            )
            print(f"test message {envelope.id} NOT delivered to {attempt.target}: {attempt.error}; {kept}")
    return 0 if results and all(a.ok for _, a in results) else 1


def _evaluate(args: argparse.Namespace, evaluator: Evaluator, settings: Settings) -> int:
    if args.once:
        report = evaluator.evaluate()
        delivered = evaluator.deliver()
        firing = sum(1 for a in evaluator.state.alerts.values() if a.status == "firing")
        print(
            f"{len(report.transitions)} transition(s), {len(report.messages)} message(s) queued, "
            f"{delivered} delivered, {len(evaluator.outbox.pending())} waiting in the outbox; "
            f"{firing} alert(s) firing"
        )
        for error in report.errors:
            print(f"  error: {error}", file=sys.stderr)
        return 1 if report.errors else 0
    stop = stop_on_signals(log, "stopping after the current step")
    log.info(
        "evaluating %d rule(s) every %.0fs; outbox %s",
        len(evaluator.rules.rules),
        settings.alerts.interval_s,
        settings.alerts.outbox_dir,
    )
    evaluator.run(stop, **run_options(settings.alerts))
    return 0
