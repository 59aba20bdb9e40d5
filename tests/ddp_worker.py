"""Run under torchrun by test_train.py: one training step in a DDP world; rank 0 saves the gradients.

Usage: torchrun --standalone --nproc_per_node=K ddp_worker.py DATA.npy LABELS.npy OUT.pt
"""
import sys

import torch

from spritediff.data import load_data
from spritediff.distributed import close_world, init_world
from spritediff.train import TrainConfig, Trainer


def one_step_record(trainer: Trainer) -> dict:
    loss = trainer.train_step()
    grads = {name: p.grad.detach().clone() for name, p in trainer.net.named_parameters()}
    buffers = {name: b.detach().clone() for name, b in trainer.net.named_buffers()}
    return {"loss": torch.tensor(loss), "grads": grads, "buffers": buffers}


def main(data_path: str, labels_path: str, out: str) -> None:
    world = init_world(torch.device("cpu"))
    try:
        trainer = Trainer(TrainConfig(steps=4, batch=8, n_feat=8, seed=1), load_data(data_path, labels_path),
                          torch.device("cpu"), world)
        record = one_step_record(trainer)
        if world.is_main:
            torch.save(record, out)
    finally:
        close_world(world)


if __name__ == "__main__":
    main(*sys.argv[1:4])
