"""The one simulated federation every experiment runs on (`ztfl experiment byzantine | sweep |
federated`, `ztfl bench dp`): agents and a gateway in one process, with the project's own code
for each step.

    data       bench.simfed.data: dataset table, split, pipeline, Dirichlet partition (models/)
    training   SimulatedFederation.local_updates: agent.update.local_update per agent
    aggregate  bench.simfed.modes: plain FedAvg, or robustness.modes' privacy modes, whose secure
               aggregations (and every other one) run through bench.simfed.secure: the gateway's
               cohort code (gateway.cohort / gateway.secagg) against the agents' clients
               (agent.secagg), with the gateway's key epochs and privacy ledger
    commit     SimulatedFederation.commit: the gateway's update of its float model
    evaluate   SimulatedFederation.evaluate: models.training's metrics
"""
from ztfl.bench.simfed.data import DataSpec, FederationData, SplitError, load_federation
from ztfl.bench.simfed.federation import LocalTraining, SimulatedFederation, round_seed
from ztfl.bench.simfed.modes import PrivacyModeAggregation, fedavg, secure_group_sums
from ztfl.bench.simfed.secure import GatewayAggregation, SecureAggregationError, SecureSum, drive

__all__ = ["DataSpec", "FederationData", "SplitError", "load_federation", "LocalTraining", "SimulatedFederation",
           "round_seed", "PrivacyModeAggregation", "fedavg", "secure_group_sums", "GatewayAggregation",
           "SecureAggregationError", "SecureSum", "drive"]
