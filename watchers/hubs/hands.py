"""How the watcher acts on hubs and NGINX: itself on one machine, or through the agents of
other hosts (watchers/hubs/agent.py), each request carrying the lease's fencing token.

With several NGINX hosts behind a floating address, a switch goes to every one of them; an
NGINX host that cannot be reached is brought to the live generation by :meth:`align` as
soon as it answers again, so whichever host holds the address serves the same hub.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from hubkeeper.config import Config, HubInstance
from hubkeeper.log import get_logger
from hubkeeper.nginx import Nginx, NginxError
from hubkeeper.redact import Secret
from hubkeeper.watchers.hubs.commands import run_command
from hubkeeper.watchers.hubs.lease import LeaseLost
from hubkeeper.watchers.hubs.logic import NginxConfigCheck

log = get_logger(__name__)
Live = tuple[str, int]
LOCAL = "local"  # the NGINX host of the watcher itself (no agents)
CONNECT_TIMEOUT = 0.5  # seconds: agents are on the hubs' own network


class AgentError(RuntimeError):
    def __init__(self, url: str, status: int | None, message: str) -> None:
        super().__init__(f"agent {url}: {message}")
        self.status = status  # None: the agent did not answer


class AgentClient:
    def __init__(self, url: str, token: Secret | None, timeout: float) -> None:
        self.url = url.rstrip("/")
        # a host that is gone must not hold the watcher's cycle; an answer may take a whole
        # start or switch on the agent's side
        self.timeout = (CONNECT_TIMEOUT, timeout)
        self.session = requests.Session()
        if token is not None:
            self.session.headers["Authorization"] = f"Bearer {token.reveal()}"

    def call(self, path: str, document: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST ``document`` (GET when None); a refused fencing token raises LeaseLost."""
        try:
            if document is None:
                response = self.session.get(self.url + path, timeout=self.timeout)
            else:
                response = self.session.post(self.url + path, json=document, timeout=self.timeout)
        except requests.RequestException as error:
            raise AgentError(self.url, None, type(error).__name__) from None
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:200]}
        if response.status_code == 409:
            raise LeaseLost(f"agent {self.url} refused: {body.get('error')}")
        if response.status_code != 200:
            raise AgentError(self.url, response.status_code, str(body.get("error", body)))
        return dict(body)


class Hands:
    """The watcher's actions on hub instances and NGINX, wherever they run."""

    def __init__(self, config: Config, config_path: Path, token: Callable[[], int]) -> None:
        self.config = config
        self.config_path = config_path
        self.token = token  # raises LeaseLost when this watcher may not act
        secret, section = config.watcher.agent_token, config.watcher
        # a request may wait for a whole start or switch on the agent's side
        timeout = section.start_timeout + section.confirm_timeout + 5
        self.hub_agents = {
            hub.name: AgentClient(hub.agent, secret, timeout)
            for hub in config.jupyterhub.instances
            if hub.agent
        }
        self.nginx_agents = [AgentClient(url, secret, timeout) for url in config.nginx.agents]
        self.nginx = Nginx(config.nginx, Path(config.nginx.prefix))
        self.pool = ThreadPoolExecutor(max(1, len(self.nginx_agents)), thread_name_prefix="agent")

    @property
    def remote(self) -> bool:
        return bool(self.hub_agents or self.nginx_agents)

    def announce(self) -> None:
        """Tell every agent the new token first, so a former leader is refused everywhere."""
        document = {"token": self.token()}
        for agent in [*self.hub_agents.values(), *self.nginx_agents]:
            try:
                agent.call("/v1/token", document)
            except AgentError as error:
                log.warning("agent_unreachable", error=str(error))

    # -- hubs ------------------------------------------------------------------------------

    def hub(self, hub: HubInstance, action: str, timeout: float) -> bool:
        """Run the instance's ``action`` command on its host; False when it failed or its
        host's agent did not answer."""
        agent = self.hub_agents.get(hub.name)
        if agent is None:
            argv = getattr(hub, f"{action}_command")
            return run_command(argv, timeout, f"{action} {hub.name}", self.config_path)
        try:
            agent.call(f"/v1/hubs/{hub.name}/{action}", {"token": self.token()})
        except AgentError as error:
            log.error("command_failed", action=f"{action} {hub.name}", error=str(error))
            return False
        return True

    # -- NGINX -----------------------------------------------------------------------------

    def _each(self, path: str, document: dict[str, Any]) -> dict[str, dict[str, Any] | Exception]:
        def one(agent: AgentClient) -> dict[str, Any] | Exception:
            try:
                return agent.call(path, document)
            except AgentError as error:
                return error

        results = list(self.pool.map(one, self.nginx_agents))
        return {agent.url: result for agent, result in zip(self.nginx_agents, results, strict=True)}

    def check(self, hub: HubInstance, generation: int) -> None:
        """Raise NginxError if NGINX would refuse the config that serves ``hub``."""
        if not self.nginx_agents:
            candidate = self.nginx.render(hub, generation)
            self.nginx.check_new_listens(candidate)
            self.nginx.validate(candidate).unlink()
            return
        results = self._each(
            "/v1/nginx/check", {"token": self.token(), "hub": hub.name, "generation": generation}
        )
        refused = [str(r) for r in results.values() if isinstance(r, AgentError) and r.status]
        if refused or all(isinstance(r, Exception) for r in results.values()):
            raise NginxError("; ".join(refused) or "no NGINX host answered")

    def nginx_configs(self, hub: HubInstance, generation: int) -> dict[str, NginxConfigCheck]:
        """Each NGINX host's live config file: does it pass ``nginx -t``, is it the config
        rendered for ``hub`` at ``generation``? By host: ``local`` (the watcher's own NGINX)
        or the agent's URL; an agent that does not answer is left out."""
        if not self.nginx_agents:
            return {LOCAL: NginxConfigCheck(*self.nginx.check_live(hub, generation))}
        path = f"/v1/nginx?hub={hub.name}&generation={generation}"
        found = {}
        for agent in self.nginx_agents:
            try:
                config = agent.call(path)["config"]
            except (AgentError, KeyError, TypeError):
                continue
            found[agent.url] = NginxConfigCheck(config["error"], bool(config["generated"]))
        return found

    def repair_nginx(
        self, host: str, hub: HubInstance, generation: int, confirm_timeout: float
    ) -> str:
        """Replace the refused live config of ``host`` by the generated one; the path of
        the refused file, kept on that host. NginxError when it failed."""
        if host == LOCAL:
            return self.nginx.repair(hub, generation, confirm_timeout)
        agent = next(agent for agent in self.nginx_agents if agent.url == host)
        document = {"token": self.token(), "hub": hub.name, "generation": generation}
        try:
            return f"{host}: {agent.call('/v1/nginx/repair', document)['kept']}"
        except AgentError as error:
            raise NginxError(str(error)) from None

    def live(self) -> Live | None:
        """What NGINX serves: the newest generation among the NGINX hosts that answer."""
        if not self.nginx_agents:
            return self.nginx.live()
        lives = [self._live(agent) for agent in self.nginx_agents]
        known = [live for live in lives if live is not None]
        return max(known, key=lambda live: live[1]) if known else None

    @staticmethod
    def _live(agent: AgentClient) -> Live | None:
        try:
            live = agent.call("/v1/nginx").get("nginx")
        except AgentError:
            return None
        return (str(live[0]), int(live[1])) if live else None

    def switch(self, hub: HubInstance, generation: int, confirm_timeout: float) -> float:
        """Point NGINX at ``hub``, confirmed; returns the seconds the confirmation took.

        Every NGINX host that answers must switch: if one fails, those that switched are
        rolled back and the switch fails. A host that does not answer is aligned later."""
        if not self.nginx_agents:
            return self.nginx.switch(hub, generation, confirm_timeout)
        token = self.token()
        results = self._each(
            "/v1/nginx/switch", {"token": token, "hub": hub.name, "generation": generation}
        )
        switched = [url for url, result in results.items() if not isinstance(result, Exception)]
        failed = [str(r) for r in results.values() if isinstance(r, AgentError) and r.status]
        if failed or not switched:
            for agent in self.nginx_agents:
                if agent.url in switched:
                    agent.call("/v1/nginx/rollback", {"token": token})
            raise NginxError("; ".join(failed) or "no NGINX host answered")
        behind = sorted(set(results) - set(switched))
        if behind:
            log.warning("nginx_hosts_behind", hosts=behind, generation=generation)
        return max(float(results[url]["confirm_seconds"]) for url in switched)  # type: ignore[index]

    def align(self, hub: HubInstance, generation: int) -> list[str]:
        """Switch every NGINX host that serves another hub or generation; the hosts still
        behind (not answering, or refusing the config) are returned."""
        behind = []
        for agent in self.nginx_agents:
            live = self._live(agent)
            if live == (hub.name, generation):
                continue
            try:
                agent.call(
                    "/v1/nginx/switch",
                    {"token": self.token(), "hub": hub.name, "generation": generation},
                )
                log.warning("nginx_host_aligned", host=agent.url, was=live, generation=generation)
            except AgentError as error:
                behind.append(agent.url)
                log.debug("nginx_host_behind", error=str(error))
        return behind
