"""FlexRec on FlexRec-v0: the trainer, its two ideas and an evaluation on needs it never trained on.

    python examples/train_flexrec.py

One transformer ranking policy is trained on five needs from sparse, noisy feedback (30% of labels observed, 10%
wrong): the policy starts from the critic's ranking, each sampled ranking gets per-position swap rewards, the critic
fills in the labels the feedback did not observe and weights each position by its confidence. Then it ranks for
held-out needs it never saw, beside the critic alone and the supervised baseline fitted on the same feedback budget.
"""

from agents.baselines import RandomAgent
from agents.evaluation import evaluate
from agents.flexrec import FlexRecAgent
from agents.supervised import SupervisedAgent

env_kwargs = {"need": ["interest", "trending", "niche", "fresh", "diverse"]}  # one policy for every need
agent = FlexRecAgent(advantage="flexrec", group_size=8, requests_per_batch=16, eval_every=0)
agent.learn(env_kwargs, total_steps=100_000, seed=0, logdir=None)  # steps = item placements
last = agent.history[-1]
print(f"critic: ECE {last['critic/ece']:.3f}; observed gains inside 1 sigma {last['critic/within_1sigma']:.2f}")
supervised = SupervisedAgent().learn(env_kwargs, total_steps=100_000, seed=0)  # the same feedback budget

needs = ["trending", "niche", "fresh+niche", "trending+fresh"]  # the last two are held out from training
for ranker in (RandomAgent(0), supervised, agent.critic_ranker(), agent):
    print(evaluate(ranker, {}, needs=needs, episodes=200, seed=1_000_000).table(("NDCG@5", "Recall@5")))
