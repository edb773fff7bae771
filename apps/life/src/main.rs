//! life: Conway's game of life on a 48x16 torus, printing every generation.
//!
//! The board starts as random soup (from `amber::random`) and is reseeded when
//! it dies out or settles into a cycle of period one or two.

#![forbid(unsafe_code)]

use std::time::Duration;

const WIDTH: usize = 48;
const HEIGHT: usize = 16;

/// Pause between printed generations.
const FRAME_INTERVAL: Duration = Duration::from_millis(500);

type Board = [[bool; WIDTH]; HEIGHT];

fn main() {
    let mut board = random_board();
    let mut previous = [[false; WIDTH]; HEIGHT];
    let mut generation: u64 = 0;
    loop {
        print(&board, generation);
        let next = step(&board);
        if next == board || next == previous || population(&next) == 0 {
            amber::info!("settled after generation {generation}; new soup");
            previous = [[false; WIDTH]; HEIGHT];
            board = random_board();
        } else {
            previous = board;
            board = next;
        }
        generation += 1;
        amber::sleep(FRAME_INTERVAL);
    }
}

/// A board with about a quarter of its cells alive.
fn random_board() -> Board {
    let mut noise = [0u8; WIDTH * HEIGHT];
    amber::random(&mut noise);
    let mut board = [[false; WIDTH]; HEIGHT];
    for (cell, byte) in board.iter_mut().flatten().zip(noise) {
        *cell = byte < 64;
    }
    board
}

/// The next generation: a live cell with 2 or 3 live neighbours lives on, a dead
/// cell with exactly 3 comes alive; edges wrap around.
fn step(board: &Board) -> Board {
    let mut next = [[false; WIDTH]; HEIGHT];
    for (row, next_row) in next.iter_mut().enumerate() {
        for (column, next_cell) in next_row.iter_mut().enumerate() {
            let neighbours = live_neighbours(board, row, column);
            *next_cell = matches!((board[row][column], neighbours), (true, 2 | 3) | (false, 3));
        }
    }
    next
}

fn live_neighbours(board: &Board, row: usize, column: usize) -> usize {
    let mut count = 0;
    for row_offset in [HEIGHT - 1, 0, 1] {
        for column_offset in [WIDTH - 1, 0, 1] {
            if (row_offset, column_offset) == (0, 0) {
                continue;
            }
            let neighbour_row = (row + row_offset) % HEIGHT;
            let neighbour_column = (column + column_offset) % WIDTH;
            count += usize::from(board[neighbour_row][neighbour_column]);
        }
    }
    count
}

fn population(board: &Board) -> usize {
    board.iter().flatten().filter(|cell| **cell).count()
}

fn print(board: &Board, generation: u64) {
    amber::info!("generation {generation}, population {}", population(board));
    for row in board {
        let line: String = row
            .iter()
            .map(|&alive| if alive { '#' } else { '.' })
            .collect();
        amber::info!("{line}");
    }
}
