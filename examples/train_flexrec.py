"""FlexRec on FlexRec-v0: the trainer, its two ideas and an evaluation on needs it never trained on.

    python examples/train_flexrec.py

One transformer ranking policy is trained on five needs from sparse, noisy feedback (30% of labels observed, 10%
wrong): each sampled ranking gets per-position swap rewards, the critic fills in the labels the feedback did not
observe and weights each position by its confidence. Then it ranks for held-out needs it never saw.
"""

from agents.baselines import RandomAgent
from agents.evaluation import evaluate
from agents.flexrec import FlexRecAgent

env_kwargs = {"need": ["interest", "trending", "niche", "fresh", "diverse"]}  # one policy for every need
agent = FlexRecAgent(advantage="flexrec", group_size=8, requests_per_batch=16, eval_every=0)
agent.learn(env_kwargs, total_steps=100_000, seed=0, logdir=None)  # steps = item placements
print(agent.history[-1]["critic/within_1sigma"], "of observed labels inside the critic's 1-sigma interval")

needs = ["trending", "niche", "fresh+niche", "trending+fresh"]  # the last two are held out from training
for ranker in (RandomAgent(0), agent):
    print(evaluate(ranker, {}, needs=needs, episodes=200, seed=1_000_000).table(("NDCG@5", "Recall@5")))
