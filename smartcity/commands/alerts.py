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
from types import FrameType

from alerts.engine import Evaluator
from alerts.messages import TemplateError, Templates
from alerts.outbox import Outbox
from alerts.rules import RulesError, RulesFile, load_rules
from alerts.topology import Topology, TopologyError
from sensors.communes import CommuneRegistry, RegistryError
from smartcity.settings import Settings

log = logging.getLogger("smartcity.alerts")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `alerts` sub-command and its `check` and `test` actions."""
    parser = subparsers.add_parser(
        "alerts",
        help="evaluate alert rules and deliver messages (email webhooks, SMTP)",
        description="Evaluate the alert rules against the store on a schedule, and deliver the "
        "messages through each commune's webhook or SMTP server. Rules: docs/alerts.md.",
    )
    parser.add_argument(
        "--rules", metavar="FILE", type=Path, help="rules file (default: the alerts.rules_file setting)"
    )
    parser.add_argument(
        "--once", action="store_true", help="evaluate once, attempt the deliveries due, and exit"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
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
    path = getattr(args, "test_rules", None) or args.rules or settings.alerts.rules_file
    if path is None:
        print(
            "smartcity alerts: no rules file: give --rules FILE or set alerts.rules_file "
            "(SMARTCITY_ALERTS__RULES_FILE); examples/alerts.toml is a full example",
            file=sys.stderr,
        )
        return 2
    try:
        rules = load_rules(path, registry)
        templates = Templates(rules.defaults.templates_dir or settings.alerts.templates_dir)
        topology = Topology.load(rules.defaults.topology) if rules.defaults.topology else Topology.empty()
    except (RulesError, TemplateError, TopologyError) as exc:
        print(f"smartcity alerts: {exc}", file=sys.stderr)
        return 2
    for name in rules.missing_secrets():
        log.warning("environment variable %s is not set: messages for its channel wait in the outbox", name)
    if args.action == "test":
        return _test(
            args, rules=rules, registry=registry, templates=templates, topology=topology, settings=settings
        )
    return _evaluate(
        args, rules=rules, registry=registry, templates=templates, topology=topology, settings=settings
    )


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


def _outbox(settings: Settings) -> Outbox:
    return Outbox(settings.alerts.outbox_dir, settings.alerts.audit_file)


def _test(
    args: argparse.Namespace,
    *,
    rules: RulesFile,
    registry: CommuneRegistry,
    templates: Templates,
    topology: Topology,
    settings: Settings,
) -> int:
    outbox = _outbox(settings)
    # No store: a test message needs none, and the running evaluator may hold the DuckDB file.
    evaluator = Evaluator(
        rules,
        None,
        registry,
        outbox,
        state_file=settings.alerts.state_file,
        dashboard_url=settings.alerts.dashboard_url,
        language=settings.alerts.language,
        templates=templates,
        topology=topology,
    )
    try:
        envelopes = evaluator.send_test(args.rule, args.commune)
    except KeyError as exc:
        print(f"smartcity alerts test: {exc.args[0]}", file=sys.stderr)
        outbox.close()
        return 2
    ids = {e.id for e in envelopes}
    results = [(e, a) for e, a in outbox.deliver_due(evaluator.clock()) if e.id in ids]
    outbox.close()
    for envelope, attempt in results:
        if attempt.ok:
            print(f"test message {envelope.id} delivered to {attempt.target}")
        else:
            kept = (
                "kept in the outbox for retries" if attempt.retryable else "refused for good (outbox failed/)"
            )
            print(f"test message {envelope.id} NOT delivered to {attempt.target}: {attempt.error}; {kept}")
    return 0 if results and all(a.ok for _, a in results) else 1


def _evaluate(
    args: argparse.Namespace,
    *,
    rules: RulesFile,
    registry: CommuneRegistry,
    templates: Templates,
    topology: Topology,
    settings: Settings,
) -> int:
    from storage import open_store

    store = open_store(settings.store)
    outbox = _outbox(settings)
    try:
        evaluator = Evaluator(
            rules,
            store,
            registry,
            outbox,
            state_file=settings.alerts.state_file,
            dashboard_url=settings.alerts.dashboard_url,
            language=settings.alerts.language,
            templates=templates,
            topology=topology,
        )
    except ValueError as exc:  # an unreadable state file
        print(f"smartcity alerts: {exc}", file=sys.stderr)
        return 2
    try:
        if args.once:
            report = evaluator.evaluate()
            delivered = evaluator.deliver()
            firing = sum(1 for a in evaluator.state.alerts.values() if a.status == "firing")
            print(
                f"{len(report.transitions)} transition(s), {len(report.messages)} message(s) queued, "
                f"{delivered} delivered, {len(outbox.pending())} waiting in the outbox; "
                f"{firing} alert(s) firing"
            )
            for error in report.errors:
                print(f"  error: {error}", file=sys.stderr)
            return 1 if report.errors else 0
        stop = threading.Event()

        def _stop(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: stopping after the current step", signum)
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        log.info(
            "evaluating %d rule(s) every %.0fs; outbox %s",
            len(rules.rules),
            settings.alerts.interval_s,
            settings.alerts.outbox_dir,
        )
        evaluator.run(
            stop,
            interval_s=settings.alerts.interval_s,
            delivery_interval_s=settings.alerts.delivery_interval_s,
        )
        return 0
    finally:
        outbox.close()
        store.close()
